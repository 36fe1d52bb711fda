"""DHCP for tests: the golden firmware packets in tests/data/dhcp/, and one exchange with a
ProxyDHCP on loopback."""

from __future__ import annotations

import socket
from pathlib import Path

from pxeserver.dhcp import packets as dp
from pxeserver.dhcp.proxy import ProxyDhcp

from .net import wait_for

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "dhcp"
UUID = "6fb9d0e1-3c2a-4e1b-8f00-00000000abcd"


def golden(name: str) -> bytes:
    """A golden packet of tests/data/dhcp/ (see tests/data/dhcp/craft.py)."""
    return _hex(GOLDEN / f"{name}.hex")


def captured_bytes(name: str) -> bytes:
    """A packet captured from real firmware in the lab (tests/data/dhcp/captured/)."""
    return _hex(GOLDEN / "captured" / f"{name}.hex")


def _hex(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().replace("\n", ""))


def exchange(port: int, packet: bytes, timeout: float = 2.0) -> dp.DhcpPacket | None:
    """Send from a loopback socket (the service answers the sender) and read one reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(packet, ("127.0.0.1", port))
        try:
            data = s.recv(4096)
        except TimeoutError:
            return None
    return dp.parse(data)


def handled(proxy: ProxyDhcp, port: int, packet: bytes) -> dp.DhcpPacket | None:
    """Send ``packet`` to ``proxy`` and wait until it has handled it (its counters say it
    answered, ignored or dropped it); then the reply, if it sent one, is already waiting
    (it counts a packet answered after sending). None: it sent nothing, a fact rather than
    a timeout that a slow machine could outlast."""

    def done() -> int:
        c = proxy.counters
        return c["answered"] + c["ignored"] + c["bad"]

    before = done()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(packet, ("127.0.0.1", port))
        wait_for(lambda: done() > before, 10, "ProxyDHCP to handle the packet", interval=0.001)
        s.setblocking(False)
        try:
            data = s.recv(4096)
        except BlockingIOError:
            return None
    return dp.parse(data)
