"""Hostile DHCP against the live ProxyDHCP: malformed packets, and a flood of DISCOVERs from
random MACs that must neither stop real machines booting nor become a stream of new records."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeserver.boot import BootService
from pxeserver.dhcp.proxy import ProxyDhcp
from pxeserver.model import MAC, EventKind, Machine
from pxeserver.nodes.registry import Change

from ..support.dhcp import exchange, golden

KNOWN = MAC.parse("52:54:00:aa:00:01")


@pytest.fixture
def proxy(service: BootService, tmp_path: Path) -> Iterator[ProxyDhcp]:
    (tmp_path / "tftproot").mkdir(exist_ok=True)
    p = ProxyDhcp(service, address="127.0.0.1", dhcp_port=0, pxe_port=0,
                  tftp_root=tmp_path / "tftproot").start()  # fmt: skip
    yield p
    p.stop()


def with_mac(packet: bytes, mac: bytes) -> bytes:
    return packet[:28] + mac + packet[34:]


def overloaded(base: bytes, value: int, in_file: bytes, in_sname: bytes) -> bytes:
    data = bytearray(base)
    data[108:236] = in_file.ljust(128, b"\0")
    data[44:108] = in_sname.ljust(64, b"\0")
    return bytes(data[:240]) + bytes([52, 1, value]) + bytes(data[240:])


GOOD = golden("bios-pxe-discover")
HOSTILE = {
    "truncated header": GOOD[:100],
    "header without options": GOOD[:236],
    "cookie only": GOOD[:240],
    "option length past the end": GOOD[:-1] + bytes([60, 250]) + b"PXEClient",
    "length byte missing": GOOD[:-1] + bytes([93]),
    "overload value 0": overloaded(GOOD, 0, b"", b""),
    "overload value 255": overloaded(GOOD, 255, b"", b""),
    "overload loop in file": overloaded(GOOD, 1, bytes([52, 1, 1, 255]), b""),
    "overload loop in sname": overloaded(GOOD, 3, bytes([53, 1, 1, 255]), bytes([52, 1, 2])),
    "overload: file runs past its end": overloaded(GOOD, 1, bytes([60, 200]) + b"x" * 126, b""),
    "hardware length 255": GOOD[:2] + bytes([255]) + GOOD[3:],
    "an unusable relay address": GOOD[:24] + socket.inet_aton("0.0.0.1") + GOOD[28:],
    "noise": os.urandom(576),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_packet_then_a_real_offer(proxy: ProxyDhcp, case: str) -> None:
    assert exchange(proxy.ports["dhcp"], HOSTILE[case], 0.2) is None
    assert exchange(proxy.ports["pxe"], HOSTILE[case], 0.2) is None
    reply = None
    for _ in range(3):  # as firmware retries (a loaded machine may be slow to answer)
        reply = exchange(proxy.ports["dhcp"], GOOD, 3.0)
        if reply is not None:
            break
    assert reply is not None and reply.file == b"undionly.kpxe" and reply.yiaddr == "0.0.0.0"


def test_a_flood_of_random_macs_is_not_a_flood_of_records(
    proxy: ProxyDhcp, service: BootService
) -> None:
    """3,000 DISCOVERs from random MACs as fast as one socket sends them; in the middle a
    known machine boots. It gets its OFFER and its sighting is written; a new machine gets
    its OFFER too (its record is made when it fetches its iPXE script over HTTP, which no
    limit touches). The new records the flood leaves are bounded by
    limits.new_macs_per_second (20 a second, 40 at once)."""
    service.registry.apply(KNOWN, Change(EventKind.DHCP, "racked last week", Machine(KNOWN)))
    service.start_background()  # learns which MACs the registry has
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.1", 0))
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # offers to it: let them drop
    known = with_mac(GOOD, bytes.fromhex(KNOWN.hex))
    new = with_mac(golden("uefi-pxe-discover"), bytes.fromhex("525400aa0002"))
    sent, reply, new_reply = 0, None, None
    started = time.monotonic()
    try:
        for i in range(3000):
            flood.sendto(
                with_mac(GOOD, b"\x02" + os.urandom(5)), ("127.0.0.1", proxy.ports["dhcp"])
            )
            sent += 1
            if i % 100 == 99:
                time.sleep(0.03)  # (not much faster than the server reads them)
            if i == 1500:
                for _ in range(3):  # firmware retries its DISCOVER: 3 tries here
                    reply = exchange(proxy.ports["dhcp"], known, 1.0)
                    if reply is not None:
                        break
            if i == 2000:  # a machine never seen before boots too: its offer never waits
                for _ in range(3):
                    new_reply = exchange(proxy.ports["dhcp"], new, 1.0)
                    if new_reply is not None:
                        break
        took = time.monotonic() - started
        assert reply is not None and reply.file == b"undionly.kpxe", (
            "the known machine got no offer"
        )
        assert new_reply is not None and new_reply.file == b"snponly.efi"
        assert service.flush_background(30)
    finally:
        flood.close()
        service.stop_background()
    nodes = service.registry.all()
    node = service.registry.get(KNOWN)
    assert node is not None and len(node.events) == 2 and node.events[1].kind == EventKind.DHCP
    bound = 1 + 2 * 20 + 20 * (time.monotonic() - started)  # the budget until it stopped
    counters = service.sightings.counters
    waiting = counters["deferred"] + counters["limited"]
    dropped = counters["dropped"]  # the write queue was full (a loaded machine writes slowly)
    print(
        f"\n{sent} DISCOVERs from random MACs in {took:.2f} s: {len(nodes)} records, "
        f"{waiting} new MACs made to wait, {dropped} dropped, "
        f"{proxy.counters['answered']} answered"
    )
    assert len(nodes) <= bound, (len(nodes), bound)
    # Every answered flood MAC was either recorded (at most `bound`), made to wait, or
    # dropped with the queue full; the known and the new machine may each have been
    # answered up to 3 times (retries).
    assert waiting + dropped >= proxy.counters["answered"] - bound - 6
