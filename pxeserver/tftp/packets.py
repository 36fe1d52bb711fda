"""TFTP packets (RFC 1350) and option negotiation (RFC 2347, 2348, 2349, 7440): pure code.

Nothing here touches a socket or a file. :func:`parse` turns bytes into a packet or raises
:class:`PacketError` with a sentence that says what was wrong; :func:`negotiate` decides which
of a client's options are granted. The rules every server must keep, whatever the client sends:

- option names are matched case-insensitively (``BLKSIZE`` is ``blksize``);
- only options the client asked for are answered, and when nothing is granted there is no
  OACK at all (PXELINUX and some firmware abort on an option they did not ask for);
- a value out of range or not a number is ignored as if it had not been asked for: never fatal.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6

# Error codes (RFC 1350, RFC 2347).
NOT_DEFINED = 0
FILE_NOT_FOUND = 1
ACCESS_VIOLATION = 2
DISK_FULL = 3
ILLEGAL_OPERATION = 4
UNKNOWN_TID = 5
FILE_EXISTS = 6
NO_SUCH_USER = 7
OPTION_REFUSED = 8

DEFAULT_BLKSIZE = 512
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464  # RFC 2348
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255  # RFC 2349, seconds
MIN_WINDOWSIZE, MAX_WINDOWSIZE = 1, 65535  # RFC 7440
MAX_FILENAME = 255  # longer names are refused; no boot loader needs more
MAX_REQUEST = 2048  # a request larger than this is not a TFTP request we answer

_HEADER = struct.Struct("!HH")


class PacketError(ValueError):
    """The bytes are not a packet we accept; the message says why."""


@dataclass(frozen=True)
class Request:
    """A read (RRQ) or write (WRQ) request. Option names are lower-cased, values raw."""

    opcode: int
    filename: str
    mode: str
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ack:
    block: int


@dataclass(frozen=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True)
class Data:
    block: int
    payload: bytes


Packet = Request | Ack | Error | Data


def _split_strings(body: bytes) -> list[bytes]:
    """NUL-terminated strings. A missing final NUL is an error, not a guess."""
    if not body.endswith(b"\0"):
        raise PacketError("the request's last field is not NUL-terminated")
    return body[:-1].split(b"\0")


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise PacketError(f"the {what} is not ASCII") from exc


def parse_request(packet: bytes) -> Request:
    if len(packet) < 2:
        raise PacketError(f"a packet of {len(packet)} bytes has no opcode")
    opcode = packet[0] << 8 | packet[1]  # (a request may be as short as its opcode)
    if len(packet) > MAX_REQUEST:
        raise PacketError(f"the request is {len(packet)} bytes, more than {MAX_REQUEST}")
    fields = _split_strings(packet[2:])
    if len(fields) < 2:
        raise PacketError("the request has no transfer mode")
    filename = _text(fields[0], "file name")
    mode = _text(fields[1], "transfer mode").lower()
    if mode not in ("octet", "netascii", "mail"):
        raise PacketError(f"unknown transfer mode {mode[:20]!r}")
    options: dict[str, str] = {}
    pairs = fields[2:]
    # An odd trailing name without a value is dropped (some clients pad with a NUL).
    for i in range(0, len(pairs) - 1, 2):
        name = pairs[i].decode("ascii", "replace").lower()
        if name and name not in options:
            options[name] = pairs[i + 1].decode("ascii", "replace")
    return Request(opcode, filename, mode, options)


def parse(packet: bytes) -> Packet:
    """Decode one datagram. Raises :class:`PacketError` for anything malformed."""
    if len(packet) < 2:
        raise PacketError(f"a packet of {len(packet)} bytes has no opcode")
    opcode = packet[0] << 8 | packet[1]
    if opcode in (RRQ, WRQ):
        return parse_request(packet)
    if opcode == ACK:
        if len(packet) < 4:
            raise PacketError("an ACK of fewer than 4 bytes")
        return Ack(_HEADER.unpack_from(packet)[1])
    if opcode == ERROR:
        if len(packet) < 4:
            raise PacketError("an ERROR of fewer than 4 bytes")
        code = _HEADER.unpack_from(packet)[1]
        return Error(code, packet[4:].split(b"\0", 1)[0].decode("ascii", "replace"))
    if opcode == DATA:
        if len(packet) < 4:
            raise PacketError("a DATA packet of fewer than 4 bytes")
        return Data(_HEADER.unpack_from(packet)[1], packet[4:])
    raise PacketError(f"unknown opcode {opcode}")


def ack_block(packet: bytes) -> int | None:
    """The block number of an ACK, or None if ``packet`` is not one. The hot path's parser."""
    if len(packet) >= 4 and packet[0] == 0 and packet[1] == ACK:
        return packet[2] << 8 | packet[3]
    return None


# -- building --------------------------------------------------------------------------------


def data_header(block: int) -> bytes:
    return _HEADER.pack(DATA, block & 0xFFFF)


def data(block: int, payload: bytes) -> bytes:
    return _HEADER.pack(DATA, block & 0xFFFF) + payload


def ack(block: int) -> bytes:
    return _HEADER.pack(ACK, block & 0xFFFF)


def error(code: int, message: str) -> bytes:
    text = message.encode("ascii", "replace")[:200]
    return _HEADER.pack(ERROR, code) + text + b"\0"


def oack(options: Mapping[str, str | int]) -> bytes:
    body = b"".join(f"{k}\0{v}\0".encode("ascii") for k, v in options.items())
    return struct.pack("!H", OACK) + body


def request(
    filename: str, options: Mapping[str, str | int] | None = None, *, opcode: int = RRQ
) -> bytes:
    """A request as a client sends it (for tests and the benchmark)."""
    body = f"{filename}\0octet\0".encode("ascii")
    body += b"".join(f"{k}\0{v}\0".encode("ascii") for k, v in (options or {}).items())
    return struct.pack("!H", opcode) + body


# -- negotiation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Negotiated:
    """What a transfer runs with, and the options to acknowledge (in the client's order)."""

    blksize: int = DEFAULT_BLKSIZE
    timeout: float | None = None  # None: the server's own retransmission timeout
    windowsize: int = 1
    granted: Mapping[str, str] = field(default_factory=dict)  # empty: no OACK at all


def _int(value: str) -> int | None:
    text = value.strip()
    if not text.isdigit() or len(text) > 10:
        return None
    return int(text)


def negotiate(
    options: Mapping[str, str],
    size: int | None,
    *,
    max_blksize: int = MAX_BLKSIZE,
    max_windowsize: int = 64,
) -> Negotiated:
    """Grant what the client asked for, within the limits; ignore everything else.

    ``size`` is the file's length for ``tsize`` (None when unknown: tsize is then not
    answered). ``blksize`` above ``max_blksize`` is lowered to it (RFC 2348 lets the server
    answer a smaller value); below 8 it is ignored. ``windowsize`` is capped at
    ``max_windowsize``. ``timeout`` outside 1–255 s is ignored.
    """
    granted: dict[str, str] = {}
    blksize, windowsize, timeout = DEFAULT_BLKSIZE, 1, None
    for name, value in options.items():
        number = _int(value)
        if name == "blksize" and number is not None and number >= MIN_BLKSIZE:
            blksize = min(number, max_blksize, MAX_BLKSIZE)
            granted[name] = str(blksize)
        elif name == "tsize" and number is not None and size is not None:
            granted[name] = str(size)
        elif name == "timeout" and number is not None and MIN_TIMEOUT <= number <= MAX_TIMEOUT:
            timeout = float(number)
            granted[name] = str(number)
        elif name == "windowsize" and number is not None and number >= MIN_WINDOWSIZE:
            windowsize = min(number, max_windowsize, MAX_WINDOWSIZE)
            granted[name] = str(windowsize)
    return Negotiated(blksize, timeout, windowsize, granted)
