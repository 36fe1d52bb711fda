"""The store contract for batches and for views, against real SQLite and a real etcd:
``get_many``, ``update_many`` (all or nothing, one transaction) and the feed an HTTP
worker's view follows (a snapshot of every head, then each change in order)."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from pxeserver.model import MAC, Event, EventKind, Node, State
from pxeserver.store import MAX_BATCH, BatchConflict, BatchTooLarge, Head
from pxeserver.store.sqlite import SQLiteFeed, SQLiteStore

from ..support.net import wait_for

# The in-memory fake of the contract suite has no feed: HTTP workers follow real stores only.
BACKENDS_WITH_A_FEED = pytest.mark.parametrize("store", ["sqlite", "etcd"], indirect=True)

MACS = [MAC.parse(f"52:54:00:00:01:{i:02x}") for i in range(4)]


def by_index(i: int) -> str:
    return f"node-{i:03d}"


def feed_of(store: Any) -> Any:
    if isinstance(store, SQLiteStore):
        return SQLiteFeed(store, interval=0.01)
    from pxeserver.store.etcdfeed import EtcdFeed

    return EtcdFeed(store)


def test_get_many_reads_the_nodes_that_exist(store: Any) -> None:
    created = [store.create(Node(mac=m), by_index) for m in MACS[:2]]
    found = store.get_many(MACS)
    assert set(found) == set(MACS[:2])
    assert [found[v.node.mac].revision for v in created] == [v.revision for v in created]
    assert store.get_many([]) == {}


def test_update_many_writes_every_node(store: Any) -> None:
    old = [store.create(Node(mac=m), by_index) for m in MACS]
    new = [v.node.replace(state=State.BOOTING, boot_count=i) for i, v in enumerate(old)]
    written = store.update_many(list(zip(old, new)))
    for v, n in zip(written, new):
        got = store.get(n.mac)
        assert got is not None and got.node == n and got.revision == v.revision
    # the new revisions are what a later compare-and-swap names
    store.update_many([(written[0], new[0].replace(state=State.CONFIGURED))])


def test_update_many_is_all_or_nothing(store: Any) -> None:
    a, b, c = (store.create(Node(mac=m), by_index) for m in MACS[:3])
    moved = store.update(b, b.node.replace(labels={"rack": "r1"}))  # someone else wrote b
    store.delete(MACS[2])
    pairs = [(v, v.node.replace(state=State.BOOTING)) for v in (a, b, c)]
    with pytest.raises(BatchConflict) as caught:
        store.update_many(pairs)
    assert set(caught.value.current) == {MACS[1], MACS[2]}  # a was not in the way
    assert caught.value.current[MACS[1]] == moved
    assert caught.value.current[MACS[2]] is None
    assert store.get(MACS[0]) == a  # nothing written


def test_update_many_does_not_rename_or_take_too_many(store: Any) -> None:
    a = store.create(Node(mac=MACS[0]), by_index)
    with pytest.raises(ValueError, match="rename"):
        store.update_many([(a, a.node.replace(hostname="other"))])
    with pytest.raises(ValueError, match="at most"):
        store.update_many([(a, a.node)] * (MAX_BATCH + 1))


def test_etcd_refuses_a_batch_larger_than_a_request(etcd: Any) -> None:
    from pxeserver.store.etcd import MAX_TXN_BYTES, EtcdStore

    from ..support.etcd import etcd_prefix

    store = EtcdStore((etcd.client_url,), etcd_prefix(), timeout=3.0)
    try:
        old = [store.create(Node(mac=m), by_index) for m in MACS[:2]]
        big = "x" * (MAX_TXN_BYTES // 2 + 1)
        with pytest.raises(BatchTooLarge):
            store.update_many([(v, v.node.replace(labels={"pad": big})) for v in old])
        store.update_many([(old[0], old[0].node.replace(labels={"pad": big}))])  # one fits
    finally:
        store.close()


def heads_by_mac(heads: list[Head]) -> dict[MAC, Node | None]:
    return {h.mac: Node.from_dict(json.loads(h.text)) if h.text else None for h in heads}


@BACKENDS_WITH_A_FEED
def test_a_feed_gives_every_head_then_each_change_in_order(store: Any) -> None:
    a = store.create(Node(mac=MACS[0], events=(Event(EventKind.DHCP, 1.0, State.DISCOVERED),)),
                     by_index)  # fmt: skip
    feed = feed_of(store)
    heads, cursor = feed.snapshot()
    seen = heads_by_mac(heads)
    assert seen == {MACS[0]: a.node.replace(events=())}  # the head: no timeline
    delivered: list[Head] = []
    stopping = threading.Event()
    thread = threading.Thread(
        target=feed.follow, args=(cursor, lambda h, _: delivered.extend(h), stopping)
    )
    thread.start()

    def then(change: Any, count: int) -> None:
        change()
        wait_for(lambda: len(delivered) >= count, 10, f"the feed to deliver {count} changes")

    try:
        box: list[Any] = []
        then(lambda: box.append(store.create(Node(mac=MACS[1]), by_index)), 1)
        then(lambda: store.update(a, a.node.replace(profile="coreos")), 2)
        then(lambda: store.delete(MACS[1]), 3)
    finally:
        stopping.set()
        thread.join(10)
    assert not thread.is_alive(), "follow returns once stopping is set"
    assert [(h.mac, h.text is None) for h in delivered] == [
        (MACS[1], False), (MACS[0], False), (MACS[1], True)]  # fmt: skip
    assert heads_by_mac(delivered[:1])[MACS[1]] == box[0].node
    assert heads_by_mac(delivered[1:2])[MACS[0]].profile == "coreos"  # type: ignore[union-attr]


@BACKENDS_WITH_A_FEED
def test_a_feed_after_a_pause_has_each_node_as_it_is_now(store: Any) -> None:
    """Changes that came faster than the reader looked arrive as each node's latest
    record: a node created and deleted in between arrives deleted, or not at all."""
    feed = feed_of(store)
    _, cursor = feed.snapshot()
    a = store.create(Node(mac=MACS[0]), by_index)
    store.create(Node(mac=MACS[1]), by_index)
    store.update(a, a.node.replace(profile="coreos"))
    store.delete(MACS[1])
    delivered: list[Head] = []
    stopping = threading.Event()
    thread = threading.Thread(
        target=feed.follow, args=(cursor, lambda h, _: delivered.extend(h), stopping)
    )
    thread.start()
    try:
        wait_for(lambda: any(h.mac == MACS[1] and h.text is None for h in delivered), 10,
                 "the deletion to come through")  # fmt: skip
    finally:
        stopping.set()
        thread.join(10)
    latest: dict[MAC, Head] = {h.mac: h for h in delivered}
    assert heads_by_mac([latest[MACS[0]]])[MACS[0]].profile == "coreos"  # type: ignore[union-attr]
    assert latest[MACS[1]].text is None


def test_an_sqlite_store_of_an_earlier_version_gets_its_heads(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    node = Node(mac=MACS[0], hostname="node-001", labels={"rack": "r2"},
                events=(Event(EventKind.READY, 5.0, State.READY),))  # fmt: skip
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE nodes (mac TEXT PRIMARY KEY, hostname TEXT NOT NULL UNIQUE, "
        "revision INTEGER NOT NULL, doc TEXT NOT NULL);"
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    )
    db.execute("INSERT INTO nodes VALUES (?, ?, 3, ?)",
               (node.mac.value, node.hostname, json.dumps(node.to_dict())))  # fmt: skip
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        heads, _ = SQLiteFeed(store).snapshot()
        assert heads_by_mac(heads) == {MACS[0]: node.replace(events=())}
        got = store.get(MACS[0])
        assert got is not None and got.node == node and got.revision == 3
    finally:
        store.close()


def by_node(rows: list[Any]) -> list[Any]:
    return sorted(rows, key=lambda row: row[0])  # stable: each node's rows in their order


def test_folded_steps_write_what_steps_one_by_one_write(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Many steps of each node in one batch (each node's folded into one record write)
    write the records, account the steps and log the milestones that the same steps
    written one batch each do; a node forgotten meanwhile has each of its steps dropped."""
    from pxeserver.nodes.batches import apply_batch
    from pxeserver.nodes.registry import Registry

    from ..support.steps import mixed_steps

    registry = Registry(store, events_kept=7)
    runs = {}
    for way, base in (("folded", 0x10), ("one by one", 0x20)):
        macs = [MAC.parse(f"52:54:00:00:{base:02x}:{i:02x}") for i in range(4)]
        for mac in macs:
            store.create(Node(mac=mac, token="t", first_seen=1.0), by_index)
        store.delete(macs[3])  # forgotten before its steps are written
        each = [[(mac, c) for c in mixed_steps(random.Random(i), mac, 12 + i * 8, 1000.0,
                                               f"n{i}")] for i, mac in enumerate(macs)]  # fmt: skip
        # the nodes' steps interleaved, each node's in its order
        steps = [s for k in range(44) for node in each for s in node[k : k + 1]]
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pxeserver.nodes.batches"):
            if way == "folded":
                results = [apply_batch(registry, steps)]
            else:
                results = [apply_batch(registry, [s]) for s in steps]
        same = {mac: i for i, mac in enumerate(macs)}  # compared by the node's index
        records = {same[m]: v.node for m in macs if (v := store.get(m))}
        runs[way] = (
            {i: n.replace(mac=MACS[0], hostname="") for i, n in records.items()},
            # by node (a batch goes node by node), each node's in the order of its steps
            by_node([(same[m], c.event_id) for r in results for m, c, _ in r.written]),
            by_node([(same[m], c.event_id, why) for r in results for m, c, why in r.dropped]),
            by_node([(same[MAC.parse(r.mac)], r.getMessage().split(": ", 1)[1])  # type: ignore[attr-defined]
                     for r in caplog.records]),
        )  # fmt: skip
    assert runs["folded"] == runs["one by one"]
    records, written, dropped, lines = runs["folded"]
    assert len(records) == 3 and written and len(lines) > 10
    assert len(dropped) == 12 + 3 * 8  # every step of the forgotten node, each with its reason
