"""The DHCP conversation on a lab's segment, read back from its capture (``dhcp.pcap``).

Tests use it to show who answered what on the wire: which server's replies named which
boot file for a machine, and with which vendor class, whatever the registry says.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from pxeserver.dhcp import packets as dp
from pxeserver.model import MAC

from .sniff import read_pcap, udp_payload


@dataclass(frozen=True)
class Message:
    at: float
    source: str  # IPv4 source address of the frame
    source_port: int
    packet: dp.DhcpPacket

    @property
    def boot_file(self) -> str:
        """The file field, or option 67 where the file field is empty (without the NUL
        some servers end option 67 with: dnsmasq does)."""
        raw = self.packet.file or self.packet.options.get(dp.OPT_BOOTFILE, b"")
        return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def messages(capture: Path) -> list[Message]:
    """Every DHCP message in the capture that parses, in order."""
    found = []
    for at, frame in read_pcap(capture):
        ihl = (frame[14] & 0x0F) * 4
        sport = struct.unpack("!H", frame[14 + ihl : 14 + ihl + 2])[0]
        try:
            packet = dp.parse(udp_payload(frame))
        except dp.PacketError:
            continue
        found.append(Message(at, socket.inet_ntoa(frame[26:30]), sport, packet))
    return found


def replies_to(capture: Path, mac: MAC) -> list[Message]:
    """The servers' replies (BOOTREPLY) addressed to ``mac``."""
    return [m for m in messages(capture) if m.packet.op == dp.BOOTREPLY and m.packet.mac == mac]


def requests_from(capture: Path, mac: MAC) -> list[Message]:
    return [m for m in messages(capture) if m.packet.op == dp.BOOTREQUEST and m.packet.mac == mac]
