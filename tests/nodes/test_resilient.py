"""The cache, the journal and the resilient registry, over a real SQLite store that a
switch takes down (the etcd outage itself is tests/nodes/test_outage.py, against real etcd)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pxeserver import metrics
from pxeserver.errors import NotFound, StoreUnavailable
from pxeserver.model import MAC, EventKind, Machine, Node, State
from pxeserver.nodes import resilient
from pxeserver.nodes.cache import NodeCache
from pxeserver.nodes.journal import Journal, change_from_dict, change_to_dict
from pxeserver.nodes.registry import Change
from pxeserver.nodes.resilient import Replayer, ResilientRegistry
from pxeserver.store.sqlite import SQLiteStore

from ..support.fakes import SwitchedStore

T = TypeVar("T")
MAC1 = MAC.parse("52:54:00:00:10:01")
MAC2 = MAC.parse("52:54:00:00:10:02")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SwitchedStore]:
    s = SwitchedStore(tmp_path / "store.db")
    yield s
    s.close()


@pytest.fixture
def registry(store: SwitchedStore, tmp_path: Path) -> Iterator[ResilientRegistry]:
    r = ResilientRegistry(store, NodeCache(tmp_path / "cache.db"), Journal(tmp_path / "j.db"))
    r.guarded.break_min = r.guarded.break_max = 0.0  # no breaker unless a test wants one
    yield r
    r.journal.close()
    r.cache.close()


def down(registry: ResilientRegistry, store: SwitchedStore) -> None:
    store.up = False


def up(registry: ResilientRegistry, store: SwitchedStore) -> None:
    store.up = True
    registry.guarded._down_until = 0.0


def kinds(node: Node) -> list[str]:
    return [k for e in node.events for k in [e.kind.value] * e.count]


# -- the journal ---------------------------------------------------------------------------


def test_journal_keeps_order_and_survives_a_reopen(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    facts = Machine(MAC1, "4c4c4544-0000-1000-8000-000000000001", "x86_64", "efi", "192.0.2.9")
    changes = [
        Change(EventKind.DHCP, "seen", facts, 10.0, "e1"),
        Change(EventKind.IPXE, "profile coreos", None, 11.0, "e2", count_boot=True),
        Change(EventKind.READY, "", None, 12.0, "e3"),
    ]
    for c in changes:
        assert journal.append(MAC1, c)
    assert not journal.append(MAC1, changes[1]), "the same event id twice is one entry"
    assert journal.append(MAC2, Change(EventKind.DHCP, "", None, 13.0, "e4"), creates=True)
    journal.close()

    journal = Journal(tmp_path / "j.db")
    entries = journal.head()
    assert [e.change for e in entries[:3]] == changes
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    assert [e.creates for e in entries] == [False, False, False, True]
    assert journal.pending(MAC1) and journal.macs() == {MAC1, MAC2}
    assert journal.depth() == 4 and journal.unknown() == 1
    journal.done(entries[0].seq)
    journal.done(entries[0].seq)  # twice: counted once
    journal.done(entries[3].seq, "dropped")
    assert journal.stats() == {"journalled": 4, "replayed": 1, "dropped": 1}
    assert change_from_dict(change_to_dict(changes[0])) == changes[0]
    every = Change(EventKind.READY, "d", facts, 1.5, "e9", False, True, installs="coreos")
    assert change_from_dict(change_to_dict(every)) == every
    assert {f.name for f in dataclasses.fields(Change)} == set(change_to_dict(every)), (
        "every field of Change is journalled"
    )
    with pytest.raises(ValueError, match="event id"):
        change_to_dict(Change(EventKind.READY))


def test_cache_is_shared_through_its_file(tmp_path: Path) -> None:
    a, b = NodeCache(tmp_path / "c.db"), NodeCache(tmp_path / "c.db")
    assert (tmp_path / "c.db").stat().st_mode & 0o777 == 0o600, "it holds node tokens"
    node = Node(mac=MAC1, hostname="node-001", state=State.READY)
    a.put(node, 3)
    assert b.get(MAC1) == node and len(b) == 1
    a.put(node.replace(state=State.LOST), 3)  # the same revision again: skipped
    assert b.get(MAC1) == node
    a.put(node.replace(state=State.LOST))  # a local change always goes in
    got = b.get(MAC1)
    assert got is not None and got.state is State.LOST
    b.delete(MAC1)
    assert a.get(MAC1) is None and a.nodes() == []
    a.put(node, 4)
    a.put(Node(mac=MAC2, hostname="node-002"), 5)
    assert a.retain({MAC2}) == 1 and [n.mac for n in b.nodes()] == [MAC2]


# -- the registry through an outage -------------------------------------------------------


def test_a_known_node_is_served_from_the_cache_and_its_writes_journalled(
    registry: ResilientRegistry, store: SwitchedStore
) -> None:
    registry.apply(MAC1, Change(EventKind.IPXE, "profile coreos", count_boot=True))
    down(registry, store)
    node = registry.get(MAC1)
    assert node is not None and node.state is State.BOOTING
    after = registry.apply(MAC1, Change(EventKind.CLOUD_CONFIG, "profile coreos"))
    assert after.state is State.CONFIGURED and registry.journal.depth() == 1
    assert registry.phone_home(MAC1, node.token, EventKind.READY).state is State.READY
    with pytest.raises(StoreUnavailable):
        registry.get(MAC2)  # never seen: no guess
    with pytest.raises(StoreUnavailable):
        registry.apply(MAC2, Change(EventKind.IPXE))
    with pytest.raises(StoreUnavailable):
        registry.set(MAC1, labels={"rack": "r1"})  # operators are not journalled

    up(registry, store)
    # The store answers, but MAC1 still has entries waiting: it reads from the cache and
    # its next write queues behind them, so the store sees them in order.
    cached = registry.get(MAC1)
    assert cached is not None and cached.state is State.READY
    registry.apply(MAC1, Change(EventKind.HEARTBEAT))
    assert registry.journal.depth() == 3
    assert Replayer(registry).replay() == 3
    stored = store.inner.get(MAC1)
    assert stored is not None
    assert kinds(stored.node) == ["ipxe", "cloud-config", "ready", "heartbeat"]
    assert stored.node.state is State.READY
    assert registry.journal.stats() == {"journalled": 3, "replayed": 3, "dropped": 0}
    assert registry.cache.get(MAC1) == stored.node


def test_a_sighting_of_an_unknown_machine_is_journalled_and_creates_it(
    registry: ResilientRegistry, store: SwitchedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    down(registry, store)
    seen = registry.apply(MAC2, Change(EventKind.DHCP, "ProxyDHCP", Machine(MAC2, arch="x86_64")))
    assert seen.state is State.DISCOVERED and registry.journal.unknown() == 1
    with pytest.raises(StoreUnavailable):
        registry.get(MAC2)  # still no record to boot it with
    monkeypatch.setattr(resilient, "MAX_UNKNOWN", 1)
    other = MAC.parse("52:54:00:00:10:03")
    with pytest.raises(StoreUnavailable, match="unknown machines wait"):
        registry.apply(other, Change(EventKind.DHCP, "ProxyDHCP"))
    registry.apply(MAC2, Change(EventKind.DHCP, "again"))  # the same machine is let in
    up(registry, store)
    assert Replayer(registry).replay() == 2
    created = store.inner.get(MAC2)
    assert created is not None and created.node.arch == "x86_64"
    assert created.node.hostname == "node-001" and kinds(created.node) == ["dhcp", "dhcp"]
    assert store.inner.get(other) is None


def test_replay_is_idempotent_and_drops_writes_for_forgotten_nodes(
    registry: ResilientRegistry, store: SwitchedStore
) -> None:
    registry.apply(MAC1, Change(EventKind.IPXE, count_boot=True))
    registry.apply(MAC2, Change(EventKind.IPXE, count_boot=True))
    down(registry, store)
    registry.apply(MAC1, Change(EventKind.CLOUD_CONFIG))
    registry.apply(MAC2, Change(EventKind.CLOUD_CONFIG))
    up(registry, store)
    first = registry.journal.head()[0]
    registry.replay(first)  # landed, then pxeserver died before removing the entry
    registry.forget(MAC2)
    assert Replayer(registry).replay() == 2
    node = store.inner.get(MAC1)
    assert node is not None and kinds(node.node) == ["ipxe", "cloud-config"]
    assert registry.journal.stats() == {"journalled": 2, "replayed": 1, "dropped": 1}
    with pytest.raises(NotFound):
        registry.require(MAC2)
    registry.cache.put(Node(mac=MAC2, hostname="gone"))  # forgotten by another pxeserver
    registry.all()  # a full scan prunes it
    assert registry.cache.get(MAC2) is None and registry.cache.get(MAC1) is not None


def test_the_breaker_spares_the_store_and_the_reaper_waits_for_the_journal(
    registry: ResilientRegistry, store: SwitchedStore
) -> None:
    registry.apply(MAC1, Change(EventKind.IPXE, count_boot=True, at=1.0))
    registry.guarded.break_min, registry.guarded.break_max = 30.0, 30.0
    down(registry, store)
    calls = store.calls
    registry.apply(MAC1, Change(EventKind.CLOUD_CONFIG, at=2.0))
    for _ in range(5):
        registry.apply(MAC1, Change(EventKind.HEARTBEAT, at=3.0))
        with pytest.raises(StoreUnavailable, match="not asked again"):
            registry.get(MAC2)
    assert store.calls == calls + 1, "the store is asked once per while, not per call"
    assert registry.guarded.down
    store.up = True
    assert registry.expire() == [], "a journal waits: the stored times are behind"
    registry.guarded._down_until = 0.0
    Replayer(registry).replay()
    assert [n.mac for n in registry.expire()] == [MAC1]  # silent since 3.0: lost


def test_the_journal_depth_is_a_metric(registry: ResilientRegistry, store: SwitchedStore) -> None:
    registry.apply(MAC1, Change(EventKind.IPXE))
    down(registry, store)
    registry.apply(MAC1, Change(EventKind.CLOUD_CONFIG))
    registry.apply(MAC1, Change(EventKind.READY))
    body, _ = metrics.exposition()
    assert b"pxeserver_journal_depth 2.0" in body
    assert b'pxeserver_journal_entries_total{outcome="journalled"}' in body


def test_the_daemon_wires_the_cache_and_journal_for_etcd_only(tmp_path: Path) -> None:
    from pxeserver import daemon
    from pxeserver.nodes.registry import Registry

    from ..support.settings import make_settings

    settings = make_settings(tmp_path)
    plain: Any = daemon.make_registry(settings, SQLiteStore(tmp_path / "s.db"))
    assert type(plain) is Registry
    local = daemon.make_registry(settings, SQLiteStore(tmp_path / "s.db"), local=True)
    assert isinstance(local, ResilientRegistry)
    assert (tmp_path / "var" / "journal.db").exists() and (tmp_path / "var" / "cache.db").exists()


def test_the_breaker_probes_with_one_call_and_backs_off(
    registry: ResilientRegistry, store: SwitchedStore
) -> None:
    now = [100.0]
    guarded = registry.guarded
    guarded.clock = lambda: now[0]
    guarded.break_min, guarded.break_max = 0.5, 2.0
    store.up = False
    calls = store.calls
    waits = []
    for _ in range(4):
        with pytest.raises(StoreUnavailable):
            guarded.get(MAC1)  # the probe: asks the store
        assert store.calls == calls + 1
        calls = store.calls
        with pytest.raises(StoreUnavailable, match="not asked again"):
            guarded.get(MAC1)  # meanwhile: at once
        assert store.calls == calls
        waits.append(guarded._down_until - now[0])
        now[0] += waits[-1]
    assert waits == [0.5, 1.0, 2.0, 2.0]
    store.up = True
    assert guarded.get(MAC1) is None and not guarded.down
    store.up = False
    with pytest.raises(StoreUnavailable):
        guarded.get(MAC1)
    assert guarded._down_until - now[0] == 0.5, "a new streak starts short again"


def test_an_install_reported_during_the_outage_survives_the_replay(
    registry: ResilientRegistry, store: SwitchedStore
) -> None:
    """``ready`` under an ``install: disk`` profile marks the node installed: lost on
    replay, the node would reinstall at every boot."""
    node = registry.apply(MAC1, Change(EventKind.CLOUD_CONFIG))
    down(registry, store)
    ready = registry.phone_home(MAC1, node.token, EventKind.READY, installs="coreos")
    assert ready.installed == "coreos"
    cached = registry.get(MAC1)
    assert cached is not None and cached.installed == "coreos"
    up(registry, store)
    assert Replayer(registry).replay() == 1
    stored = store.inner.get(MAC1)
    assert stored is not None and stored.node.installed == "coreos"
