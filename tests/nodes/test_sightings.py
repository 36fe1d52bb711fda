"""What the UDP services saw: the in-memory view, the background writer, and the BootService
methods ProxyDHCP and TFTP call (they must never wait for the store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pxeserver.boot import BootService
from pxeserver.daemon import make_feed, make_service
from pxeserver.dhcp import packets as dp
from pxeserver.dhcp.proxy import ProxyDhcp
from pxeserver.errors import StoreUnavailable
from pxeserver.model import MAC, EventKind, Machine
from pxeserver.nodes.registry import Change, Registry
from pxeserver.nodes.sightings import Sightings
from pxeserver.ratelimit import TokenBucket
from pxeserver.store.sqlite import SQLiteStore

from ..support.dhcp import exchange, golden
from ..support.fakes import BrokenStore, CountingStore
from ..support.net import wait_for
from ..support.settings import make_settings

MAC1 = MAC.parse("52:54:00:00:01:01")


def test_the_view_merges_facts_and_maps_addresses(service: BootService) -> None:
    s = service.sightings
    s.seen(Machine(MAC1, uuid=None, arch="x86_64", platform="efi"))
    s.seen(Machine(MAC1, ip="192.0.2.7"))
    m = s.machine_at("192.0.2.7")
    assert m is not None and (m.mac, m.arch, m.platform) == (MAC1, "x86_64", "efi")
    other = MAC.parse("52:54:00:00:01:02")
    s.seen(Machine(other, ip="192.0.2.7"))  # the address moved to another machine
    moved = s.machine_at("192.0.2.7")
    assert moved is not None and moved.mac == other
    assert s.machine_at("192.0.2.8") is None


def test_repeated_sightings_queue_as_one_write(service: BootService) -> None:
    for i in range(50):
        service.note_dhcp(Machine(MAC1, arch="i386", ip=f"192.0.2.{i}"), "ProxyDHCP DISCOVER")
    assert service.sightings.counters["queued"] == 1
    assert service.sightings.counters["merged"] == 49
    service.start_background()
    try:
        assert service.flush_background(10)
    finally:
        service.stop_background()
    node = service.registry.get(MAC1)
    assert node is not None and node.ip == "192.0.2.49" and len(node.events) == 1
    assert service.sightings.node(MAC1) == node  # the view now knows the record


def test_a_full_queue_drops_and_counts(service: BootService) -> None:
    s = Sightings(service.registry, max_pending=3)
    for i in range(5):
        s.submit(MAC.parse(f"52:54:00:00:02:{i:02x}"), Change(EventKind.DHCP, "x"))
    assert s.counters == {"queued": 3, "merged": 0, "dropped": 2, "deferred": 0, "limited": 0,
                          "written": 0, "failed": 0}  # fmt: skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_new_macs_past_the_budget_wait_and_machines_seen_twice_go_first(
    service: BootService,
) -> None:
    clock = FakeClock()
    s = Sightings(service.registry, max_deferred=3)
    s.new_macs = TokenBucket(1, 2, clock=clock)  # 1 a second, 2 at once
    macs = [MAC.parse(f"52:54:00:00:03:{i:02x}") for i in range(6)]
    for mac in macs:
        s.submit(mac, Change(EventKind.DHCP, "seen"), merge="dhcp")
    # two within the budget; three wait; the oldest waiting is dropped for the sixth
    assert [p.mac for p in s._queue] == macs[:2]
    assert s.deferred() == 3 and s.counters["limited"] == 1
    s.submit(macs[5], Change(EventKind.DHCP, "again"), merge="dhcp")  # seen twice: merged
    s.submit(macs[4], Change(EventKind.TFTP, "undionly.kpxe"))  # kept after its sighting
    with s._lock:
        assert not s._release_locked()  # no token yet
        clock.now += 1
        assert s._release_locked()
        clock.now += 1
        assert s._release_locked()
    released = [(p.mac, p.change.kind, p.change.detail) for p in list(s._queue)[2:]]
    assert released == [(macs[5], EventKind.DHCP, "again"),  # seen twice: first
                        (macs[4], EventKind.DHCP, "seen"),  # seen twice too (its transfer)
                        (macs[4], EventKind.TFTP, "undionly.kpxe")]  # fmt: skip
    # a released MAC is known: its next change needs no token
    s.submit(macs[5], Change(EventKind.TFTP, "x"))
    assert s._queue[-1].mac == macs[5] and s.deferred() == 1
    with s._lock:
        clock.now += 1
        assert s._release_locked()  # then the ones seen once, oldest first
    assert s._queue[-1].mac == macs[3] and s.deferred() == 0


def test_a_known_mac_is_never_deferred(service: BootService) -> None:
    service.registry.apply(MAC1, Change(EventKind.DHCP, "racked"))
    s = Sightings(service.registry, new_macs_per_second=1)
    s._learn_known()
    s.new_macs = TokenBucket(1, 1, clock=FakeClock())
    s.new_macs.take()  # the budget is spent
    assert s.submit(MAC1, Change(EventKind.DHCP, "again"))
    assert [p.mac for p in s._queue] == [MAC1] and s.deferred() == 0


class FlakyStore:
    """A store that is down for its first ``down`` calls, then a real SQLite store."""

    def __init__(self, path: Path, down: int) -> None:
        self.real = SQLiteStore(path)
        self.down = down

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if name in ("get", "create", "update") and self.down > 0:

            def failing(*args: Any, **kw: Any) -> Any:
                self.down -= 1
                raise StoreUnavailable("etcd down (test)")

            return failing
        return attr


def test_writes_wait_for_the_store_and_apply_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = FlakyStore(tmp_path / "s.db", down=2)
    service = make_service(settings, store)
    service.sightings.retry_min = 0.05
    try:
        service.start_background()
        service.note_dhcp(Machine(MAC1, ip="192.0.2.9"), "seen")
        service.note_transfer("192.0.2.9", "undionly.kpxe 74213 bytes")
        assert service.flush_background(10)
        service.stop_background()
    finally:
        store.real.close()
    reopened = SQLiteStore(tmp_path / "s.db")
    try:
        found = reopened.get(MAC1)
        assert found is not None
        node = found.node
        assert [e.kind.value for e in node.events] == ["dhcp", "tftp"]
        assert service.sightings.counters["failed"] == 2
    finally:
        reopened.close()


def test_transfer_from_an_unknown_address_is_not_recorded(service: BootService) -> None:
    service.note_transfer("192.0.2.200", "x")
    assert service.sightings.pending() == 0


def test_boot_refusal_never_touches_the_store(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, {
        "server": {"exclude_macs": ["52:54:00:00:01:01"]},
        "groups": [{"name": "racked", "profile": "coreos", "selectors": {"rack": "r1"}},
                   {"name": "efi", "profile": "coreos", "selectors": {"platform": "efi"}}],
    })  # fmt: skip
    service = make_service(settings, BrokenStore())
    assert service.boot_refusal(Machine(MAC1)) == "excluded by server.exclude_macs"
    bios = Machine(MAC.parse("52:54:00:00:01:03"), platform="pcbios")
    assert service.boot_refusal(bios) is not None
    efi = Machine(MAC.parse("52:54:00:00:01:03"), platform="efi")
    assert service.boot_refusal(efi) is None
    # a node whose record (as last written from here) carries the label is answered
    from pxeserver.model import Node

    service.sightings.remember(Node(mac=bios.mac, labels={"rack": "r1"}))
    assert service.boot_refusal(bios) is None


def test_proxydhcp_answers_with_the_store_down_and_never_asks_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = CountingStore(BrokenStore())
    service = make_service(settings, store)
    (tmp_path / "tftproot").mkdir()
    proxy = ProxyDhcp(service, address="127.0.0.1", dhcp_port=0, pxe_port=0,
                      tftp_root=tmp_path / "tftproot").start()  # fmt: skip
    names = ("bios-pxe-discover", "uefi-pxe-discover", "uefi-http-discover")
    try:
        for name in names:
            reply = exchange(proxy.ports["dhcp"], golden(name))
            assert reply is not None and reply.message_type == dp.OFFER
        assert store.calls.total() == 0, store.calls  # deciding and answering asked nothing
        counters = service.sightings.counters
        wait_for(lambda: counters["queued"] + counters["merged"] == 3, 5, "three sightings")
        # With the writer running against the broken store: it asks (and fails) again and
        # again, and ProxyDHCP still answers without asking.
        service.start_background()
        wait_for(lambda: store.calls.total() > 0, 5, "the writer to try the store")
        for name in names:
            reply = exchange(proxy.ports["dhcp"], golden(name))
            assert reply is not None and reply.message_type == dp.OFFER
        assert not [t for t in store.callers if t.startswith("dhcp-")], store.callers
        assert set(store.callers) == {"sightings"}, store.callers
        # (the sighting is handed over just after the answer is sent)
        wait_for(lambda: counters["queued"] + counters["merged"] == 6, 5, "six sightings")
        assert counters["dropped"] == 0, counters
        assert service.sightings.pending() > 0  # they wait for the store, none is lost
    finally:
        proxy.stop()
        service.stop_background(flush=0.1)


def test_the_known_macs_come_from_the_feeds_heads_not_a_scan(
    service: BootService, settings: Any
) -> None:
    # A scan decodes every node's timeline: with 10,000 nodes it left the main process's
    # heap ~20 MB larger for good. serve's main process over SQLite reads the heads.
    service.registry.apply(MAC1, Change(EventKind.DHCP, "racked"))
    counting = CountingStore(service.registry.store)
    s = Sightings(Registry(counting), feed=make_feed(settings, service.registry.store))
    s._learn_known()
    assert list(s._known) == [MAC1] and counting.calls["scan"] == 0
