"""The reaper's index of deadlines (issue 13, item 5): a pass reads only the nodes past
their deadline, and reads every node, as before, while the index does not follow the store.

Over a counting store (``FixedStore``), with a feed the test holds: a change reaches the
index only when the test releases it, so "the index has not seen the heartbeat yet" is
set up exactly. Then over a real SQLite store and its real feed, with another process's
writes (a second connection to the same file), and the main process's registry and index
as the daemon builds them, over SQLite and a real etcd.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeserver import daemon
from pxeserver.config import Settings
from pxeserver.errors import StoreUnavailable
from pxeserver.model import MAC, EventKind, Node, State
from pxeserver.nodes.cache import NodeCache
from pxeserver.nodes.deadlines import Deadlines
from pxeserver.nodes.journal import Journal
from pxeserver.nodes.reaper import Reaper
from pxeserver.nodes.registry import Change, Registry
from pxeserver.nodes.resilient import ResilientRegistry
from pxeserver.store import Deliver, Head
from pxeserver.store.sqlite import SQLiteFeed, SQLiteStore

from ..support.fakes import CountingStore, FixedStore
from ..support.net import wait_for

T0 = 1_000_000.0
TTL = 90.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def mac(i: int) -> MAC:
    return MAC.parse(f"52:54:00:05:{i // 256:02x}:{i % 256:02x}")


def head(node: Node, revision: int) -> Head:
    return Head(node.mac, revision, json.dumps(node.head_dict()))


class HeldFeed:
    """A feed over a FixedStore whose changes reach the follower only when released;
    ``down`` makes it fail as a store that stopped answering."""

    def __init__(self, store: FixedStore) -> None:
        self.store = store
        self.down = threading.Event()
        self._released: queue.Queue[list[Head]] = queue.Queue()

    def snapshot(self) -> tuple[list[Head], int]:
        if self.down.is_set():
            raise StoreUnavailable("switched off")
        return [head(v.node, v.revision) for v in self.store.scan()], 1

    def follow(self, cursor: int, deliver: Deliver, stopping: threading.Event) -> None:
        while not stopping.is_set():
            if self.down.is_set():
                raise StoreUnavailable("switched off")
            with contextlib.suppress(queue.Empty):
                deliver(self._released.get(timeout=0.01), cursor)

    def release(self, mac: MAC) -> None:
        """The node's change, as it is in the store now, reaches the follower."""
        found = self.store.get(mac)
        self._released.put([head(found.node, found.revision) if found else Head(mac, 0, None)])


class Fleet:
    """``n`` ready nodes over a counting FixedStore, and a reaper whose index holds its feed."""

    def __init__(self, n: int) -> None:
        self.clock = Clock()
        self.fixed = FixedStore()
        self.counting = CountingStore(self.fixed)
        self.registry = Registry(self.counting, heartbeat_ttl=TTL, clock=self.clock)
        for i in range(n):
            self.registry.apply(mac(i), Change(EventKind.CLOUD_CONFIG))
            self.registry.apply(mac(i), Change(EventKind.READY))
        self.feed = HeldFeed(self.fixed)
        self.reaper = Reaper(self.registry, 1.0, self.feed)
        assert self.reaper.deadlines is not None
        self.index: Deadlines = self.reaper.deadlines

    def follow(self) -> None:
        self.index.start()
        wait_for(lambda: self.index.live, 10, "the index to read the store")
        self.counting.calls.clear()

    def revision(self, m: MAC) -> int:
        found = self.fixed.get(m)
        assert found is not None
        return found.revision


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet(50)
    yield f
    f.index.stop()


def test_a_pass_with_no_node_due_asks_the_store_nothing(fleet: Fleet) -> None:
    fleet.follow()
    assert len(fleet.index) == 50
    fleet.clock.t += TTL - 1
    assert fleet.reaper.reap() == []
    assert fleet.counting.calls.total() == 0, "no scan, no get"


def test_a_due_node_is_marked_lost_and_the_others_are_not_touched(fleet: Fleet) -> None:
    fleet.clock.t += 30
    for i in range(1, 50):  # all but the first speak up
        fleet.registry.apply(mac(i), Change(EventKind.HEARTBEAT))
    revisions = {mac(i): fleet.revision(mac(i)) for i in range(1, 50)}
    fleet.follow()
    fleet.clock.t = T0 + TTL + 10
    [lost] = fleet.reaper.reap()
    assert lost.mac == mac(0) and lost.state is State.LOST
    assert lost.events[-1].detail == "silent for 100 s while ready; waited for its next heartbeat"
    assert fleet.counting.calls["scan"] == 0 and fleet.counting.calls["get"] == 1
    assert {m: fleet.revision(m) for m in revisions} == revisions
    fleet.feed.release(mac(0))  # the lost node leaves the index: the next pass reads nothing
    wait_for(lambda: len(fleet.index) == 49, 10, "the index to see the node lost")
    fleet.counting.calls.clear()
    assert fleet.reaper.reap() == [] and fleet.counting.calls.total() == 0


def test_a_heartbeat_the_index_has_not_seen_yet_keeps_the_node(fleet: Fleet) -> None:
    fleet.follow()
    fleet.clock.t += TTL - 1
    # Another process (an HTTP worker, another pxeserver) writes the heartbeat to the
    # store; the index still holds the node's old deadline.
    found = fleet.fixed.get(mac(7))
    assert found is not None
    now = fleet.clock.t
    fleet.fixed.update(found, found.node.replace(last_heartbeat=now, last_seen=now))
    fleet.clock.t += 2
    assert mac(7) in fleet.index.due(fleet.clock.t)
    lost = fleet.reaper.reap()
    assert mac(7) not in [n.mac for n in lost] and len(lost) == 49
    assert fleet.registry.require(mac(7)).state is State.READY
    fleet.feed.release(mac(7))
    wait_for(lambda: mac(7) not in fleet.index.due(fleet.clock.t), 10, "the new deadline")


def test_without_a_following_index_a_pass_reads_every_node(fleet: Fleet) -> None:
    fleet.clock.t += TTL + 1
    assert not fleet.index.live  # not started: nothing read yet
    assert len(fleet.reaper.reap()) == 50
    assert fleet.counting.calls["scan"] == 1


def test_after_the_feed_failed_a_pass_reads_every_node(fleet: Fleet) -> None:
    fleet.follow()
    fleet.feed.down.set()
    wait_for(lambda: not fleet.index.live, 10, "the index to see the store down")
    fleet.counting.calls.clear()
    fleet.clock.t += TTL + 1
    assert len(fleet.reaper.reap()) == 50
    assert fleet.counting.calls["scan"] == 1
    fleet.feed.down.clear()
    wait_for(lambda: fleet.index.live, 10, "the index to read the store again")
    fleet.counting.calls.clear()
    assert len(fleet.index) == 0  # the snapshot read again has every node lost
    assert fleet.reaper.reap() == [] and fleet.counting.calls.total() == 0


def test_nodes_without_a_deadline_are_not_kept() -> None:
    f = Fleet(0)
    for state, kind in ((0, EventKind.DHCP), (1, EventKind.IPXE), (2, EventKind.CLOUD_CONFIG)):
        f.registry.apply(mac(state), Change(kind))
    try:
        f.follow()
        assert sorted(f.index.due(T0 + 10_000)) == [mac(1), mac(2)]  # discovered: none
    finally:
        f.index.stop()


# -- a real store, another process's writes, the etcd main process's cache --------------------


@pytest.fixture
def resilient(tmp_path: Path) -> Iterator[tuple[ResilientRegistry, Reaper, SQLiteStore]]:
    store = SQLiteStore(tmp_path / "store.db")
    clock = Clock()
    registry = ResilientRegistry(store, NodeCache(tmp_path / "cache.db"),
                                 Journal(tmp_path / "j.db"), heartbeat_ttl=TTL,
                                 clock=clock)  # fmt: skip
    reaper = Reaper(registry, 1.0, SQLiteFeed(store, interval=0.01))
    other = SQLiteStore(tmp_path / "store.db")  # another process's connection
    yield registry, reaper, other
    assert reaper.deadlines is not None
    reaper.deadlines.stop()
    other.close()
    registry.close()


def test_another_process_s_writes_reach_the_index_and_the_cache(
    resilient: tuple[ResilientRegistry, Reaper, SQLiteStore],
) -> None:
    registry, reaper, other = resilient
    index = reaper.deadlines
    assert index is not None
    for i in range(3):
        registry.apply(mac(i), Change(EventKind.READY))
    index.start()
    wait_for(lambda: index.live and len(index) == 3, 10, "the index to read the store")
    clock = registry.clock
    assert isinstance(clock, Clock)
    clock.t += TTL - 1
    Registry(other, clock=clock).apply(mac(1), Change(EventKind.HEARTBEAT))
    other.delete(mac(2))
    wait_for(lambda: len(index) == 2 and registry.cache.get(mac(2)) is None, 10,
             "the heartbeat and the deletion to reach the main process")  # fmt: skip
    clock.t += 2
    assert index.due(clock.t) == [mac(0)]
    assert [n.mac for n in reaper.reap()] == [mac(0)]
    assert registry.cache.get(mac(1)) is not None  # what the store still has stays cached


# -- the main process's index over the real feeds, SQLite and etcd -----------------------------


def test_the_main_process_index_follows_the_store_and_an_idle_pass_asks_nothing(
    backend: Settings,
) -> None:
    counting = CountingStore(daemon.make_store(backend))
    registry = daemon.make_registry(backend, counting)  # as the main process has it
    other = daemon.make_store(backend)  # another server's (or an HTTP worker's) store
    reaper = Reaper(registry, 1.0, daemon.make_feed(backend, counting.inner, 0.01))
    index = reaper.deadlines
    assert index is not None
    try:
        for i in range(20):
            registry.apply(mac(i), Change(EventKind.READY))
        index.start()
        wait_for(lambda: index.live and len(index) == 20, 10, "the index to read the store")
        counting.calls.clear()
        assert reaper.reap() == [] and counting.calls.total() == 0, "no scan, no get"
        Registry(other).apply(mac(20), Change(EventKind.IPXE))  # a new boot elsewhere
        Registry(other).apply(mac(0), Change(EventKind.DHCP))  # a reboot: no deadline
        wait_for(lambda: len(index) == 20 and mac(20) in index.due(time.time() + 10_000), 10,
                 "the other server's writes to reach the index")  # fmt: skip
        assert mac(0) not in index.due(time.time() + 10_000)
        assert reaper.reap() == [] and counting.calls.total() == 0
    finally:
        index.stop()
        other.close()
        registry.close()
