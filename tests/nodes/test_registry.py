from __future__ import annotations

from pathlib import Path

import pytest

from pxeserver.errors import Forbidden, HostnameTaken, NotFound
from pxeserver.model import MAC, EventKind, Machine, State
from pxeserver.nodes.change import advance
from pxeserver.nodes.registry import Change, Registry
from pxeserver.store.sqlite import SQLiteStore

MAC1 = MAC.parse("52:54:00:00:00:01")


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(tmp_path: Path, clock: Clock) -> Registry:
    return Registry(
        SQLiteStore(tmp_path / "r.db"),
        heartbeat_ttl=90,
        boot_timeout=600,
        clock=clock,
        events_kept=10,
    )


def test_a_normal_boot_walks_the_states(registry: Registry, clock: Clock) -> None:
    m = Machine(
        MAC1,
        uuid="6fb9d0e1-0000-4000-8000-00000000abcd",
        arch="x86_64",
        platform="efi",
        ip="192.0.2.9",
    )
    n = registry.apply(MAC1, Change(EventKind.DHCP, "DISCOVER", m))
    assert n.state is State.DISCOVERED and n.hostname == "node-001" and n.boot_count == 0
    clock.t += 1
    n = registry.apply(MAC1, Change(EventKind.TFTP, "undionly.kpxe"))
    assert n.state is State.DISCOVERED
    n = registry.apply(MAC1, Change(EventKind.IPXE, "profile coreos", count_boot=True))
    assert n.state is State.BOOTING and n.boot_count == 1
    n = registry.apply(MAC1, Change(EventKind.CLOUD_CONFIG))
    assert n.state is State.CONFIGURED
    n = registry.phone_home(MAC1, n.token, EventKind.READY)
    assert n.state is State.READY and n.last_heartbeat == clock.t
    assert [e.kind for e in n.events] == [
        EventKind.DHCP,
        EventKind.TFTP,
        EventKind.IPXE,
        EventKind.CLOUD_CONFIG,
        EventKind.READY,
    ]
    assert n.uuid == m.uuid and n.platform == "efi" and n.ip == "192.0.2.9"


def test_same_event_id_applies_once(registry: Registry) -> None:
    change = Change(EventKind.IPXE, "x", count_boot=True, event_id="abc")
    registry.apply(MAC1, change)
    n = registry.apply(MAC1, change)
    assert n.boot_count == 1 and len(n.events) == 1


def test_dhcp_retries_and_heartbeats_coalesce(registry: Registry, clock: Clock) -> None:
    for _ in range(5):
        registry.apply(MAC1, Change(EventKind.DHCP, "DISCOVER"))
        clock.t += 1
    n = registry.get(MAC1)
    assert n is not None and len(n.events) == 1 and n.events[0].count == 5


def test_events_are_bounded(registry: Registry, clock: Clock) -> None:
    for i in range(30):
        registry.apply(MAC1, Change(EventKind.TFTP, f"file-{i}"))
    n = registry.get(MAC1)
    assert n is not None and len(n.events) == 10 and n.events[-1].detail == "file-29"


def test_tokens(registry: Registry) -> None:
    n = registry.apply(MAC1, Change(EventKind.CLOUD_CONFIG))
    with pytest.raises(Forbidden) as missing:
        registry.phone_home(MAC1, None, EventKind.READY)
    assert missing.value.missing
    with pytest.raises(Forbidden):
        registry.phone_home(MAC1, "wrong", EventKind.READY)
    assert registry.get(MAC1).state is State.CONFIGURED  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        registry.phone_home(MAC.parse("52:54:00:00:00:09"), n.token, EventKind.READY)


def test_ready_node_goes_lost_after_the_ttl_and_comes_back(
    registry: Registry, clock: Clock
) -> None:
    n = registry.apply(MAC1, Change(EventKind.CLOUD_CONFIG))
    registry.phone_home(MAC1, n.token, EventKind.READY)
    clock.t += 80
    assert registry.expire() == []
    clock.t += 20
    lost = registry.expire()
    assert [x.mac for x in lost] == [MAC1]
    assert (
        lost[0].state is State.LOST
        and lost[0].events[-1].detail
        == "silent for 100 s while ready; waited for its next heartbeat"
    )
    assert registry.expire() == []  # once
    back = registry.phone_home(MAC1, n.token, EventKind.HEARTBEAT)
    assert back.state is State.READY


def test_a_node_stuck_mid_boot_goes_lost_after_the_boot_timeout(
    registry: Registry, clock: Clock
) -> None:
    registry.apply(MAC1, Change(EventKind.IPXE, count_boot=True))
    clock.t += 599
    assert registry.expire() == []
    clock.t += 2
    [n] = registry.expire()
    assert n.state is State.LOST
    assert [e.kind for e in n.events] == [EventKind.IPXE, EventKind.LOST]
    assert "while booting; waited for its OS to fetch its config" in n.events[-1].detail


def test_a_configured_node_that_never_phones_home_says_what_it_waited_for(
    registry: Registry, clock: Clock
) -> None:
    # What a node whose fleetd cannot reach etcd looks like: it fetched its config, and
    # its ready unit waits for its own fleet registration, which never comes.
    registry.apply(MAC1, Change(EventKind.CLOUD_CONFIG))
    clock.t += 601
    [n] = registry.expire()
    assert [e.kind for e in n.events] == [EventKind.CLOUD_CONFIG, EventKind.LOST]
    assert n.events[-1].detail == (
        "silent for 601 s while configured; waited for it to phone home ready "
        "(its config was served)"
    )


def test_discovered_nodes_are_never_lost(registry: Registry, clock: Clock) -> None:
    registry.apply(MAC1, Change(EventKind.DHCP))
    clock.t += 10_000
    assert registry.expire() == []


def test_operator_changes(registry: Registry) -> None:
    registry.apply(MAC1, Change(EventKind.DHCP))
    n = registry.set(MAC1, profile="debug", labels={"rack": "r1", "gone": None}, hostname="db-1")
    assert n.profile == "debug" and n.labels == {"rack": "r1"} and n.hostname == "db-1"
    assert n.events[-1].kind is EventKind.OPERATOR
    n = registry.set(MAC1, labels={"rack": None}, profile=None)
    assert n.labels == {} and n.profile is None
    registry.apply(MAC.parse("52:54:00:00:00:02"), Change(EventKind.DHCP))
    with pytest.raises(HostnameTaken):
        registry.set(MAC.parse("52:54:00:00:00:02"), hostname="db-1")
    with pytest.raises(NotFound):
        registry.set(MAC.parse("52:54:00:00:00:03"), hostname="x")


def test_advance_table() -> None:
    assert advance(State.READY, EventKind.DHCP) is State.DISCOVERED
    assert advance(State.BOOTING, EventKind.HEARTBEAT) is State.BOOTING
    assert advance(State.LOST, EventKind.HEARTBEAT) is State.READY
    assert advance(State.BOOTING, EventKind.TFTP) is State.BOOTING


class CountingStore:
    """The real SQLite store, counting reads (each one a round trip on etcd)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.gets = 0

    def get(self, mac: MAC) -> object:
        self.gets += 1
        return self.store.get(mac)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def test_a_write_right_after_a_read_reuses_that_read(tmp_path: Path) -> None:
    store = CountingStore(SQLiteStore(tmp_path / "r.db"))
    registry = Registry(store)  # type: ignore[arg-type]
    registry.apply(MAC1, Change(EventKind.DHCP))
    node = registry.get(MAC1)  # what /ipxe does: read, render, record
    assert node is not None
    before = store.gets
    n = registry.apply(MAC1, Change(EventKind.IPXE, count_boot=True))
    assert store.gets == before, "the write asked the store again for what it had just read"
    assert n.state is State.BOOTING and n.boot_count == 1


def test_a_reused_read_that_went_stale_loses_no_write(tmp_path: Path) -> None:
    ours = Registry(SQLiteStore(tmp_path / "r.db"))
    theirs = Registry(SQLiteStore(tmp_path / "r.db"))  # another server on the same store
    ours.apply(MAC1, Change(EventKind.DHCP))
    assert ours.get(MAC1) is not None
    theirs.apply(MAC1, Change(EventKind.IPXE, count_boot=True))  # between our read and write
    n = ours.apply(MAC1, Change(EventKind.IPXE, count_boot=True))
    assert n.boot_count == 2
    stored = theirs.get(MAC1)
    assert stored is not None and stored.boot_count == 2


def test_nothing_to_do_is_decided_on_a_fresh_read(tmp_path: Path) -> None:
    ours = Registry(SQLiteStore(tmp_path / "r.db"))
    theirs = Registry(SQLiteStore(tmp_path / "r.db"))
    ours.apply(MAC1, Change(EventKind.DHCP, event_id="a"))
    assert ours.get(MAC1) is not None
    # The other server forgets the node: the read we hold says event "a" was applied,
    # the store has no node. Applying "a" again must create it, not return the old view.
    theirs.forget(MAC1)
    n = ours.apply(MAC1, Change(EventKind.DHCP, event_id="a"))
    stored = theirs.get(MAC1)
    assert stored is not None and stored.first_seen == n.first_seen
