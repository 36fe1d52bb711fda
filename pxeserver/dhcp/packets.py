"""DHCP/BOOTP packets (RFC 2131, 2132, 3396, 4578) and the PXE facts in them: pure code.

:func:`parse` turns a datagram into a :class:`DhcpPacket` or raises :class:`PacketError`
saying why: shorter than a BOOTP header, wrong magic cookie, an option whose length runs
past the end, option 52 (overload) inside a field it overloaded (the loop the RFC leaves
open), a bad overload value. Options that appear more than once are joined (RFC 3396).
:func:`build_reply` makes a ProxyDHCP answer; it never carries an address (yiaddr 0).
"""

from __future__ import annotations

import socket
import struct
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..model import MAC

MAGIC = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes, RFC 2131 figure 1
BOOTREQUEST, BOOTREPLY = 1, 2

# Message types (option 53).
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
MESSAGE_NAMES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK",
                 7: "RELEASE", 8: "INFORM"}  # fmt: skip

OPT_PAD, OPT_END = 0, 255
OPT_REQUESTED_IP = 50
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMS = 55
OPT_VENDOR_CLASS = 60
OPT_TFTP_SERVER = 66
OPT_BOOTFILE = 67
OPT_VENDOR = 43
OPT_USER_CLASS = 77
OPT_CLIENT_ARCH = 93
OPT_CLIENT_NDI = 94
OPT_CLIENT_UUID = 97
OPT_IPXE = 175

BROADCAST_FLAG = 0x8000


class PacketError(ValueError):
    """Not a DHCP packet we can read; the message says why."""


@dataclass(frozen=True)
class DhcpPacket:
    op: int
    htype: int
    hlen: int
    hops: int
    xid: int
    secs: int
    flags: int
    ciaddr: str
    yiaddr: str
    siaddr: str
    giaddr: str
    chaddr: bytes  # 16 bytes as on the wire
    sname: bytes = b""
    file: bytes = b""
    options: Mapping[int, bytes] = field(default_factory=dict)

    @property
    def message_type(self) -> int | None:
        value = self.options.get(OPT_MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None

    @property
    def mac(self) -> MAC | None:
        if self.htype != 1 or self.hlen != 6:
            return None
        return MAC.from_bytes(self.chaddr[:6])

    def text(self, code: int) -> str | None:
        value = self.options.get(code)
        return value.decode("ascii", "replace") if value is not None else None

    @property
    def client_arch(self) -> int | None:
        """Option 93 (RFC 4578): the first architecture type the client lists."""
        value = self.options.get(OPT_CLIENT_ARCH)
        if value is None or len(value) < 2 or len(value) % 2:
            return None
        return int(struct.unpack_from("!H", value)[0])

    @property
    def client_uuid(self) -> str | None:
        """Option 97: type 0 and 16 bytes, the first three fields little-endian (EFI GUID
        order, as iPXE and EDK2 send it), so it reads as iPXE's ``${uuid}`` prints it."""
        value = self.options.get(OPT_CLIENT_UUID)
        if value is None or len(value) != 17 or value[0] != 0:
            return None
        if value[1:] in (bytes(16), b"\xff" * 16):
            return None  # firmware without a UUID sends all zeros or all ones
        return str(uuidlib.UUID(bytes_le=value[1:]))

    @property
    def is_ipxe(self) -> bool:
        """iPXE announces itself with user class ``iPXE`` (option 77) and option 175."""
        return OPT_IPXE in self.options or b"iPXE" in self.options.get(OPT_USER_CLASS, b"")

    @property
    def vendor_class(self) -> str:
        return self.text(OPT_VENDOR_CLASS) or ""

    @property
    def requested_ip(self) -> str | None:
        value = self.options.get(OPT_REQUESTED_IP)
        return socket.inet_ntoa(value) if value is not None and len(value) == 4 else None


def parse_options(raw: bytes, where: str, into: dict[int, bytes]) -> None:
    """Read the options in ``raw`` into ``into``, joining repeats (RFC 3396)."""
    i = 0
    n = len(raw)
    while i < n:
        code = raw[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            return
        if i + 1 >= n:
            raise PacketError(f"option {code} in the {where} has no length byte")
        length = raw[i + 1]
        end = i + 2 + length
        if end > n:
            raise PacketError(
                f"option {code} in the {where} claims {length} bytes but only {n - i - 2} remain"
            )
        into[code] = into.get(code, b"") + raw[i + 2 : end]
        i = end


def parse(data: bytes) -> DhcpPacket:
    """Decode a DHCP datagram. Raises :class:`PacketError` for anything malformed."""
    if len(data) < HEADER.size + len(MAGIC):
        raise PacketError(f"{len(data)} bytes is shorter than a DHCP header (240)")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     file) = HEADER.unpack_from(data)  # fmt: skip
    if data[HEADER.size : HEADER.size + 4] != MAGIC:
        raise PacketError("wrong magic cookie: a BOOTP packet, not DHCP")
    if hlen > 16:
        raise PacketError(f"hardware address length {hlen} is more than 16")
    options: dict[int, bytes] = {}
    parse_options(data[HEADER.size + 4 :], "options field", options)
    overload = options.pop(OPT_OVERLOAD, None)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise PacketError(f"option 52 (overload) has a bad value {overload.hex()}")
        # RFC 2131: the file field first, then sname. Option 52 inside them would loop.
        for bit, raw, where in ((1, file, "file field"), (2, sname, "sname field")):
            if overload[0] & bit:
                parse_options(raw, where, options)
                if OPT_OVERLOAD in options:
                    raise PacketError(f"option 52 (overload) inside the overloaded {where}")
        file = b"" if overload[0] & 1 else file
        sname = b"" if overload[0] & 2 else sname
    return DhcpPacket(
        op, htype, hlen, hops, xid, secs, flags,
        socket.inet_ntoa(ciaddr), socket.inet_ntoa(yiaddr), socket.inet_ntoa(siaddr),
        socket.inet_ntoa(giaddr), chaddr, sname.split(b"\0", 1)[0], file.split(b"\0", 1)[0],
        options,
    )  # fmt: skip


def encode_options(options: Mapping[int, bytes]) -> bytes:
    """Options in order, long values split into several of the same code (RFC 3396)."""
    out = bytearray()
    for code, value in options.items():
        if not value:
            out += bytes((code, 0))
        for i in range(0, len(value), 255):
            chunk = value[i : i + 255]
            out += bytes((code, len(chunk))) + chunk
    out.append(OPT_END)
    return bytes(out)


def build(packet: DhcpPacket) -> bytes:
    """The wire form of ``packet`` (no overloading; options in the options field)."""
    header = HEADER.pack(
        packet.op, packet.htype, packet.hlen, packet.hops, packet.xid, packet.secs, packet.flags,
        socket.inet_aton(packet.ciaddr), socket.inet_aton(packet.yiaddr),
        socket.inet_aton(packet.siaddr), socket.inet_aton(packet.giaddr),
        packet.chaddr.ljust(16, b"\0")[:16], packet.sname[:63], packet.file[:127],
    )  # fmt: skip
    return header + MAGIC + encode_options(packet.options)


# The PXE vendor options (option 43) a ProxyDHCP sends: discovery control (6) = 8, i.e.
# "take the boot file named in this offer; no boot-server discovery, no menu".
PXE_VENDOR_OPTIONS = bytes((6, 1, 8, OPT_END))


def build_reply(
    request: DhcpPacket,
    *,
    message_type: int,
    server_ip: str,
    boot_file: str,
    vendor_class: str = "PXEClient",
    tftp_server: str | None = None,
    bypass_discovery: bool = False,
) -> bytes:
    """A ProxyDHCP OFFER or ACK: no address (yiaddr 0), the boot file, PXEClient/HTTPClient.

    ``bypass_discovery`` adds the PXE vendor options (43) that tell the client to take the
    boot file from this offer rather than ask a boot server on port 4011."""
    options: dict[int, bytes] = {
        OPT_MESSAGE_TYPE: bytes((message_type,)),
        OPT_SERVER_ID: socket.inet_aton(server_ip),
        OPT_VENDOR_CLASS: vendor_class.encode("ascii"),
    }
    if bypass_discovery and vendor_class == "PXEClient":
        options[OPT_VENDOR] = PXE_VENDOR_OPTIONS
    if OPT_CLIENT_UUID in request.options:
        options[OPT_CLIENT_UUID] = request.options[OPT_CLIENT_UUID]  # the PXE spec echoes it
    encoded = boot_file.encode("ascii")
    wanted = request.options.get(OPT_PARAMS, b"")
    if OPT_TFTP_SERVER in wanted and tftp_server:
        options[OPT_TFTP_SERVER] = tftp_server.encode("ascii")
    if OPT_BOOTFILE in wanted or len(encoded) > 127:
        options[OPT_BOOTFILE] = encoded
    reply = DhcpPacket(
        op=BOOTREPLY, htype=request.htype, hlen=request.hlen, hops=0, xid=request.xid, secs=0,
        flags=request.flags, ciaddr=request.ciaddr if message_type == ACK else "0.0.0.0",
        yiaddr="0.0.0.0", siaddr=tftp_server or server_ip, giaddr=request.giaddr,
        chaddr=request.chaddr, sname=server_ip.encode("ascii"),
        file=encoded if len(encoded) <= 127 else b"", options=options,
    )  # fmt: skip
    return build(reply)


def request_packet(
    mac: MAC,
    options: Mapping[int, bytes],
    *,
    xid: int = 0x12345678,
    ciaddr: str = "0.0.0.0",
    giaddr: str = "0.0.0.0",
    flags: int = BROADCAST_FLAG,
) -> bytes:
    """A client's request, for crafting golden packets and tests."""
    chaddr = bytes(int(b, 16) for b in mac.value.split(":"))
    packet = DhcpPacket(BOOTREQUEST, 1, 6, 0, xid, 0, flags, ciaddr, "0.0.0.0", "0.0.0.0",
                        giaddr, chaddr, options=options)  # fmt: skip
    return build(packet)
