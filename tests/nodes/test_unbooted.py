"""The bound on records of machines that never booted (pxeserver.nodes.unbooted), on a
registry over a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxeserver.errors import Conflict
from pxeserver.model import MAC, EventKind, Machine
from pxeserver.nodes.registry import Change, Registry
from pxeserver.nodes.unbooted import NeverBootedBound
from pxeserver.store.sqlite import SQLiteStore


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        self.t += 1  # every record is seen a second after the one before
        return self.t


def mac(i: int) -> MAC:
    return MAC.parse(f"52:54:00:0c:{i >> 8:02x}:{i & 0xFF:02x}")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    bound = NeverBootedBound(limit=20, writers=1)
    return Registry(SQLiteStore(tmp_path / "r.db"), clock=Clock(), never_booted=bound)


def sighting(registry: Registry, i: int) -> None:
    registry.apply(mac(i), Change(EventKind.DHCP, "DISCOVER", Machine(mac(i))))


def test_the_oldest_never_booted_make_way_and_the_rest_stay(registry: Registry) -> None:
    # A node that booted, one an operator labelled, one an operator named: never bounded.
    sighting(registry, 1000)
    booted = registry.phone_home(mac(1000), registry.require(mac(1000)).token, EventKind.READY)
    sighting(registry, 1001)
    registry.set(mac(1001), labels={"rack": "r1"})
    sighting(registry, 1002)
    registry.set(mac(1002), hostname="spare-1")
    for i in range(200):
        sighting(registry, i)
        unbooted = [n for n in registry.all() if n.never_booted]
        assert len(unbooted) <= 20, (i, len(unbooted))
    left = {n.mac for n in registry.all()}
    assert {booted.mac, mac(1001), mac(1002)} <= left
    assert mac(199) in left and mac(0) not in left  # the newest stay, the oldest went
    assert registry.never_booted is not None and registry.never_booted.dropped >= 200 - 20


def test_seen_again_is_kept_longer_than_seen_once(registry: Registry) -> None:
    sighting(registry, 0)
    for i in range(1, 30):
        sighting(registry, i)
        if i % 5 == 0:
            sighting(registry, 0)  # a real machine asks again: its record is recent
    assert registry.get(mac(0)) is not None
    assert registry.get(mac(1)) is None  # the control: seen once, long ago, it went


def test_a_node_that_changed_since_the_read_is_not_forgotten(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    registry = Registry(store, clock=Clock())
    for i in range(3):
        sighting(registry, i)
    found = {v.node.mac: v for v in store.scan()}
    registry.phone_home(mac(0), registry.require(mac(0)).token, EventKind.READY)
    with pytest.raises(Conflict):  # what the bound relies on: delete at the revision read
        store.delete(mac(0), found[mac(0)].revision)
    bound = NeverBootedBound(limit=10, writers=1)
    bound.target = 0  # forget every never-booted record it reads
    with bound.place(store):
        pass
    assert [v.node.mac for v in store.scan()] == [mac(0)]


def test_the_arithmetic_keeps_every_writer_within_the_limit() -> None:
    for limit in (10, 100, 10_000):
        for writers in (1, 3, 9):
            bound = NeverBootedBound(limit, writers)
            assert bound.batch >= 1 and bound.target >= 0
            assert bound.target + writers * bound.batch <= limit
