"""Boot steps recorded behind the answer (issue 13, item 2): the step logs, the batches the
recorder writes, and steps that reach the store after a later step of the same node.

Over a real SQLite store; the store outage paths over the switched store of
``tests/support/fakes.py`` (a real SQLite store that can be turned off at an exact moment).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pxeserver.errors import StoreUnavailable
from pxeserver.model import MAC, EventKind, Machine, Node, State, new_event_id
from pxeserver.nodes.batches import apply_batch
from pxeserver.nodes.cache import NodeCache
from pxeserver.nodes.journal import Journal
from pxeserver.nodes.recorder import Recorder
from pxeserver.nodes.registry import Change, Registry
from pxeserver.nodes.resilient import ResilientRegistry
from pxeserver.nodes.steps import MAX_STEPS_PER_NODE, StepLog, StepReader
from pxeserver.store import MAX_BATCH
from pxeserver.store.sqlite import SQLiteStore

from ..support.fakes import CountingStore, SwitchedStore

A = MAC.parse("52:54:00:14:00:01")
B = MAC.parse("52:54:00:14:00:02")


def step(kind: EventKind, at: float, **kw: object) -> Change:
    return Change(kind, f"step {at}", at=at, event_id=new_event_id(), **kw)  # type: ignore[arg-type]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(CountingStore(SQLiteStore(tmp_path / "store.db")))  # type: ignore[arg-type]


# -- a step written after a later one ---------------------------------------------------------


def test_a_late_step_goes_where_its_time_puts_it_and_leaves_the_state(
    registry: Registry,
) -> None:
    t = time.time()
    first = step(EventKind.IPXE, t + 10, count_boot=True, facts=Machine(A, ip="10.0.0.1"))
    registry.apply(A, first)
    registry.apply(A, step(EventKind.READY, t + 30))  # the phone-home, written at once
    late = step(EventKind.CLOUD_CONFIG, t + 20, facts=Machine(A, ip="10.0.0.2", arch="x86_64"))
    node = registry.apply(A, late)  # answered before ready, written after it
    assert [e.kind for e in node.events] == [EventKind.IPXE, EventKind.CLOUD_CONFIG,
                                             EventKind.READY]  # fmt: skip
    assert node.events[1].state is State.CONFIGURED  # the state its step led to
    assert node.state is State.READY  # the newest step's
    assert node.ip == "10.0.0.1" and node.arch == "x86_64"  # only facts it did not have
    assert node.last_seen == t + 30 and node.boot_count == 1
    assert registry.apply(A, late) == node  # written twice: once
    node = registry.apply(A, step(EventKind.IPXE, t + 5, count_boot=True))  # even earlier
    assert [e.at for e in node.events] == [t + 5, t + 10, t + 20, t + 30]
    assert node.boot_count == 2 and node.first_seen <= t + 5 and node.state is State.READY


def test_a_late_step_decides_the_state_when_only_an_operator_came_after_it(
    registry: Registry,
) -> None:
    registry.apply(A, step(EventKind.IPXE, time.time()))
    answered = time.time()
    registry.set(A, labels={"rack": "r1"})  # an operator's change, written meanwhile
    node = registry.apply(A, step(EventKind.CLOUD_CONFIG, answered))
    assert node.state is State.CONFIGURED
    assert [e.kind for e in node.events] == [EventKind.IPXE, EventKind.CLOUD_CONFIG,
                                             EventKind.OPERATOR]  # fmt: skip


# -- batches ------------------------------------------------------------------------------------


def test_a_batch_folds_each_nodes_steps_into_one_write(registry: Registry) -> None:
    for mac in (A, B):
        registry.apply(mac, step(EventKind.DHCP, 1.0))
    store: CountingStore = registry.store  # type: ignore[assignment]
    store.calls.clear()
    steps = [(A, step(EventKind.IPXE, 2.0, count_boot=True)), (B, step(EventKind.IPXE, 2.1)),
             (A, step(EventKind.CLOUD_CONFIG, 3.0)), (A, step(EventKind.IPXE, 4.0))]  # fmt: skip
    result = apply_batch(registry, steps)
    assert dict(store.calls) == {"get_many": 1, "update_many": 1}
    assert [c.kind for mac, c, _ in result.written if mac == A] == [
        EventKind.IPXE, EventKind.CLOUD_CONFIG, EventKind.IPXE]  # fmt: skip
    node = registry.require(A)
    assert [e.kind for e in node.events][1:] == [EventKind.IPXE, EventKind.CLOUD_CONFIG,
                                                 EventKind.IPXE]  # fmt: skip
    assert node.state is State.BOOTING and result.versions[A].node == node
    # again, starting from the versions it wrote: no read; and written twice, once
    store.calls.clear()
    again = apply_batch(registry, steps, result.versions)
    assert dict(store.calls) == {} and registry.require(A) == node
    assert again.written == []


def test_a_batch_retries_a_node_that_changed_and_drops_a_forgotten_one(
    registry: Registry,
) -> None:
    t = time.time()
    for mac in (A, B):
        registry.apply(mac, step(EventKind.DHCP, t))
    stale = apply_batch(registry, [(A, step(EventKind.IPXE, t + 1))]).versions
    registry.set(A, labels={"rack": "r1"})  # an operator, meanwhile
    registry.forget(B)
    result = apply_batch(registry, [(A, step(EventKind.CLOUD_CONFIG, t + 2)),
                                    (B, step(EventKind.IPXE, t + 2))], stale)  # fmt: skip
    node = registry.require(A)
    assert node.labels == {"rack": "r1"} and node.state is State.CONFIGURED
    assert [(mac, why) for mac, _, why in result.dropped] == [
        (B, "the node is no longer in the registry")]  # fmt: skip
    assert registry.get(B) is None  # not created by a step


def test_more_nodes_than_one_transaction_takes(registry: Registry) -> None:
    macs = [MAC.parse(f"52:54:00:15:{i // 256:02x}:{i % 256:02x}") for i in range(MAX_BATCH + 5)]
    for mac in macs:
        registry.apply(mac, step(EventKind.DHCP, 1.0))
    store: CountingStore = registry.store  # type: ignore[assignment]
    store.calls.clear()
    apply_batch(registry, [(mac, step(EventKind.IPXE, 2.0)) for mac in macs])
    assert store.calls["update_many"] == 2
    assert all(registry.require(mac).state is State.BOOTING for mac in macs)


def test_steps_the_store_does_not_take_are_journalled_in_order(tmp_path: Path) -> None:
    switched = SwitchedStore(tmp_path / "store.db")
    journal = Journal(tmp_path / "journal.db")
    registry = ResilientRegistry(switched, NodeCache(tmp_path / "cache.db"), journal)
    registry.apply(A, step(EventKind.DHCP, 1.0))
    switched.up = False
    result = registry.apply_batch([(A, step(EventKind.IPXE, 2.0)),
                                   (A, step(EventKind.CLOUD_CONFIG, 3.0))])  # fmt: skip
    assert result.failed == [] and len(result.journalled) == 2
    assert [e.change.kind for e in journal.head()] == [EventKind.IPXE, EventKind.CLOUD_CONFIG]
    assert registry.get(A).state is State.CONFIGURED  # type: ignore[union-attr]  # the cache
    switched.up = True
    later = registry.apply_batch([(A, step(EventKind.READY, 4.0))])
    assert later.journalled  # behind the entries still waiting, not before them


# -- the step logs -------------------------------------------------------------------------------


def test_a_step_log_is_read_in_order_marked_done_and_removed(tmp_path: Path) -> None:
    folder = tmp_path / "steps"
    log = StepLog(folder)
    noted = [step(EventKind.IPXE, 1.0, facts=Machine(A, ip="192.0.2.9")),
             step(EventKind.CLOUD_CONFIG, 2.0)]  # fmt: skip
    for change in noted:
        log.note(A, change)
    reader = StepReader(folder)
    assert reader.read() == [(A, c) for c in noted]
    assert reader.read() == []  # not twice
    reader.rewind()  # the store did not take them: read again
    assert [c for _, c in reader.read()] == noted
    reader.mark_done()
    assert StepReader(folder).read() == []  # a new reader (a restart) starts after them
    assert len(list(folder.glob("*.log"))) == 1  # still held by its writer
    log.close()
    reader.read()
    reader.mark_done()
    assert list(folder.iterdir()) == []  # finished and done: gone


STEPS = [
    step(EventKind.IPXE, 1.5, count_boot=True,
         facts=Machine(A, uuid="1b4e28ba-2fa1-11d2-883f-0016d3cca427", arch="x86_64",
                       platform="efi", ip="192.0.2.9")),
    Change(EventKind.CLOUD_CONFIG, "profile flatcar; asked from 2001:db8::7, not 192.0.2.9",
           at=1_800_000_000.123456, event_id=new_event_id(), config_issued=1 << 60,
           answered=True),
    Change(EventKind.IPXE, 'ünïcödé "quoted" \\ back\nslash\r\u2028\u2029\x85\x00\ud800 😀',
           facts=Machine(A, ip="fe80::1"), at=0.1, event_id="</script>&<>", move=False),
    Change(EventKind.READY, "", at=float(2**53), event_id=new_event_id(), installs="disk-é"),
]  # fmt: skip


@pytest.mark.parametrize("change", STEPS)
def test_a_step_line_is_json_dumps_of_the_step(tmp_path: Path, change: Change) -> None:
    """The bytes json.dumps gave each step before the log kept an encoder of its own."""
    import json

    from pxeserver.nodes.journal import change_to_dict

    folder = tmp_path / "steps"
    log = StepLog(folder)
    log.note(A, change)
    log.close()
    line = next(folder.glob("*.log")).read_bytes()
    assert line == json.dumps({"mac": A.value, **change_to_dict(change)}).encode() + b"\n"
    assert StepReader(folder).read() == [(A, change)]


def test_a_step_line_holds_every_field_of_the_step(tmp_path: Path) -> None:
    """The line's bytes written out: the fields in their order, the kind as its value,
    the facts as a dict of theirs."""
    folder = tmp_path / "steps"
    log = StepLog(folder)
    log.note(A, Change(EventKind.IPXE, "profile é", Machine(A, ip="192.0.2.9"), at=1.5,
                       event_id="e1", count_boot=True, config_issued=7, answered=True))  # fmt: skip
    log.close()
    assert next(folder.glob("*.log")).read_bytes() == (
        b'{"mac": "52:54:00:14:00:01", "kind": "ipxe", "detail": "profile \\u00e9", "facts": '
        b'{"mac": "52:54:00:14:00:01", "uuid": null, "arch": null, "platform": null, '
        b'"ip": "192.0.2.9"}, "at": 1.5, "event_id": "e1", "move": true, "count_boot": true, '
        b'"installs": null, "config_issued": 7, "answered": true}\n'
    )


def test_a_new_log_past_its_size_and_a_cap_per_node_per_read(tmp_path: Path) -> None:
    folder = tmp_path / "steps"
    log = StepLog(folder, max_bytes=2000)
    for i in range(MAX_STEPS_PER_NODE + 8):
        log.note(A, step(EventKind.IPXE, float(i)))
    log.note(B, step(EventKind.IPXE, 99.0))
    assert len(list(folder.glob("*.log"))) > 1
    reader = StepReader(folder)
    first = reader.read()
    assert sum(1 for mac, _ in first if mac == A) == MAX_STEPS_PER_NODE
    assert reader.capped  # more of A noted already
    rest = reader.read()
    assert not reader.capped
    wanted = [float(i) for i in range(MAX_STEPS_PER_NODE + 8)]
    assert [c.at for mac, c in first + rest if mac == A] == wanted
    assert (B, EventKind.IPXE) in [(m, c.kind) for m, c in first + rest]
    log.close()


def test_a_line_cut_by_a_kill_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "steps"
    log = StepLog(folder)
    log.note(A, step(EventKind.IPXE, 1.0))
    path = next(folder.glob("*.log"))
    with open(path, "ab") as f:
        f.write(b'{"mac": "52:54:00:14:00:01", "kind": "cloud-con')  # killed mid-write
    reader = StepReader(folder)
    assert len(reader.read()) == 1  # the writer lives: the rest may still come
    log.close()  # it died
    assert reader.read() == [] and reader.skipped == 1
    reader.mark_done()
    assert not path.exists()


# -- the recorder ---------------------------------------------------------------------------


def test_the_recorder_writes_and_keeps_what_the_store_did_not_take(tmp_path: Path) -> None:
    switched = SwitchedStore(tmp_path / "store.db")
    registry = Registry(switched)  # type: ignore[arg-type]
    registry.apply(A, step(EventKind.DHCP, 1.0))
    log = StepLog(tmp_path / "steps")
    recorder = Recorder(StepReader(tmp_path / "steps"),
                        lambda s, known: apply_batch(registry, s, known))  # fmt: skip
    log.note(A, step(EventKind.IPXE, 2.0, count_boot=True))
    switched.up = False
    with pytest.raises(StoreUnavailable):
        recorder.flush()
    switched.up = True
    assert registry.require(A).state is State.DISCOVERED
    assert recorder.flush() == 1  # read again, written now
    assert registry.require(A).boot_count == 1
    log.note(A, step(EventKind.CLOUD_CONFIG, 3.0))
    log.close()
    recorder.stop()  # writes what is left
    assert registry.require(A).state is State.CONFIGURED
    assert os.listdir(tmp_path / "steps") == []
    assert registry.require(A) == Node.from_dict(registry.require(A).to_dict())


def test_one_node_asked_for_faster_than_reads_come_is_caught_up_at_once(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 steps of one MAC (32 a read) are written by reads one after the other, with
    no wait in between: a backlog of one node drains instead of growing for ever."""
    registry.apply(A, step(EventKind.DHCP, 1.0))
    log = StepLog(tmp_path / "steps")
    for i in range(500):
        log.note(A, step(EventKind.CLOUD_CONFIG if i % 2 else EventKind.IPXE, 2.0 + i,
                         count_boot=not i % 2))  # fmt: skip
    recorder = Recorder(StepReader(tmp_path / "steps"),
                        lambda s, known: apply_batch(registry, s, known))  # fmt: skip
    waits: list[float] = []

    def wait(delay: float) -> bool:  # the thread's wait; True: stop
        waits.append(delay)
        return len(waits) > 1 and delay > 0

    monkeypatch.setattr(recorder, "_wait", wait)
    store: CountingStore = registry.store  # type: ignore[assignment]
    store.calls.clear()
    recorder._run()  # the thread's loop, here: until its first wait after the backlog
    reads = -(-500 // MAX_STEPS_PER_NODE)
    assert waits == [recorder.interval] + [0.0] * (reads - 1) + [recorder.interval]
    assert store.calls["update_many"] == reads
    node = registry.require(A)
    assert node.boot_count == 250 and node.events[-1].at == 501.0  # the last noted
    assert not recorder.reader.capped and recorder.flush() == 0
    log.close()


def test_a_capped_read_the_store_does_not_take_waits_longer_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    switched = SwitchedStore(tmp_path / "store.db")
    registry = Registry(switched)  # type: ignore[arg-type]
    registry.apply(A, step(EventKind.DHCP, 1.0))
    log = StepLog(tmp_path / "steps")
    for i in range(100):
        log.note(A, step(EventKind.IPXE, 2.0 + i))
    recorder = Recorder(StepReader(tmp_path / "steps"),
                        lambda s, known: apply_batch(registry, s, known))  # fmt: skip
    waits: list[float] = []
    monkeypatch.setattr(recorder, "_wait", lambda delay: waits.append(delay) or len(waits) > 4)
    switched.up = False
    recorder._run()
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8]  # no read at once while the store is down
    switched.up = True
    waits.clear()
    recorder._run()
    assert waits == [0.05, 0.0, 0.0, 0.0, 0.05]  # back: a read, then at once until done
    assert registry.require(A).events[-1].at == 101.0
    log.close()
