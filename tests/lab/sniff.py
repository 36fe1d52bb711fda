"""Record the DHCP and PXE traffic on the lab's bridge into a pcap file.

Run inside the lab's namespace (``ip netns exec NS python -m tests.lab.sniff BRIDGE FILE``);
it stops on SIGTERM. Only UDP to or from ports 67, 68 and 4011 is kept: that is what
firmware sends while it looks for its boot server, and what tests/data/ keeps as golden
packets for the ProxyDHCP parser. Written with the standard library alone (AF_PACKET), so
the lab needs no tcpdump.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys
import time
from pathlib import Path

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PORTS = {67, 68, 4011}


def dhcp_ports(frame: bytes) -> tuple[int, int] | None:
    """(source, destination) UDP ports if ``frame`` is IPv4 UDP on a DHCP/PXE port."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[23] != 17 or len(frame) < 14 + ihl + 8:
        return None
    sport, dport = struct.unpack("!HH", frame[14 + ihl : 14 + ihl + 4])
    if sport in PORTS or dport in PORTS:
        return sport, dport
    return None


def main(bridge: str, out: Path) -> None:
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((bridge, 0))
    # Promiscuous: also the frames the bridge forwards between its ports (the site DHCP
    # server's unicast answers to a VM), not only those for the namespace itself.
    ifindex = socket.if_nametoindex(bridge)
    mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    sock.settimeout(0.5)
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # pcap, Ethernet
        f.flush()
        while not stop:
            try:
                frame = sock.recv(65535)
            except (TimeoutError, InterruptedError):
                continue
            if dhcp_ports(frame) is None:
                continue
            now = time.time()
            sec, usec = int(now), int((now % 1) * 1e6)
            f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
            f.flush()


def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    """The frames of a pcap file this module wrote, with their times."""
    data = path.read_bytes()
    frames, at = [], 24
    while at + 16 <= len(data):
        sec, usec, caplen, _ = struct.unpack("<IIII", data[at : at + 16])
        frames.append((sec + usec / 1e6, data[at + 16 : at + 16 + caplen]))
        at += 16 + caplen
    return frames


def udp_payload(frame: bytes) -> bytes:
    ihl = (frame[14] & 0x0F) * 4
    return frame[14 + ihl + 8 :]


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
