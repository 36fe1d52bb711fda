"""Boot steps folded into a node's record in memory (pxeserver/nodes/fold.py): the same
record, and the same steps applied with the same milestones, as applying each step to the
record the one before made (``Registry.change_fn``, the path of a single write)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from pxeserver import timeline
from pxeserver.model import MAC, EventKind, Node, State
from pxeserver.nodes.cache import NodeCache
from pxeserver.nodes.change import Change
from pxeserver.nodes.fold import fold, prepare
from pxeserver.nodes.journal import Journal
from pxeserver.nodes.registry import Registry
from pxeserver.nodes.resilient import ResilientRegistry

from ..support.fakes import SwitchedStore
from ..support.steps import mixed_steps

A = MAC.parse("52:54:00:16:00:01")


def one_by_one(registry: Registry, node: Node, steps: list[Change]) -> tuple[Node, list]:
    """Each step applied to the record the one before made, and what each that changed
    it left for its milestone (state, how long its step took)."""
    marks = []
    for change in steps:
        new = registry.change_fn(change)(node)
        if new is not None:
            node = new
            took = None
            if node.events[-1].kind is change.kind:
                took = timeline.step_took(node.events, len(node.events) - 1)
            marks.append((change, node.state, took))
    return node, marks


@pytest.mark.parametrize("kept", [3, 7, 50])
def test_folding_a_nodes_steps_makes_the_record_applying_them_one_by_one_makes(
    kept: int,
) -> None:
    registry = Registry(None, events_kept=kept)  # type: ignore[arg-type]  # pure: no store
    rng = random.Random(kept)
    for n in range(150):
        start = Node(mac=A, hostname="node-001", first_seen=0.0)
        steps = mixed_steps(rng, A, rng.randint(1, 40), 1000.0 + n)
        expected, marks = one_by_one(registry, start, steps)
        node, applied = fold(start, [prepare(c, registry.clock) for c in steps], kept)
        assert node == expected
        assert applied == marks
        assert len(node.events) <= kept
        assert (node is start) == (not marks)  # nothing applied: the very same record


def test_a_step_the_node_has_applied_is_skipped_and_the_others_are_kept() -> None:
    registry = Registry(None)  # type: ignore[arg-type]
    first = Change(EventKind.IPXE, "boot", at=10.0, event_id="e1", count_boot=True)
    node = registry.change_fn(first)(Node(mac=A))
    assert node is not None
    again = [first, Change(EventKind.CLOUD_CONFIG, at=11.0, event_id="e2"),
             Change(EventKind.CLOUD_CONFIG, at=12.0, event_id="e3", config_issued=5),
             Change(EventKind.CLOUD_CONFIG, at=13.0, event_id="e4", config_issued=5)]  # fmt: skip
    folded, applied = registry.fold(node, [prepare(c, registry.clock) for c in again])
    assert [c.event_id for c, _, _ in applied] == ["e2", "e3"]  # e1 written, e4 refused
    assert folded.boot_count == 1 and folded.state is State.CONFIGURED
    assert folded.recent_ids == ("e1", "e2", "e3")
    assert folded == one_by_one(registry, node, again)[0]


def test_journalled_steps_move_the_cached_record_as_one_by_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    switched = SwitchedStore(tmp_path / "store.db")
    registry = ResilientRegistry(switched, NodeCache(tmp_path / "cache.db"),
                                 Journal(tmp_path / "journal.db"), events_kept=7)  # fmt: skip
    cached = registry.apply(A, Change(EventKind.DHCP, at=900.0, event_id="dhcp"))
    steps = mixed_steps(random.Random(1), A, 30, 1000.0)
    steps.append(steps[3])  # one it has: journalled again, applied once
    switched.up = False
    with caplog.at_level(logging.INFO, logger="pxeserver.nodes.resilient"):
        result = registry.apply_batch([(A, c) for c in steps])
    assert result.journalled == [(A, c) for c in steps]
    assert registry.cache.get(A) == one_by_one(registry, cached, steps)[0]
    journalled = [r for r in caplog.records if "(journalled)" in r.getMessage()]
    assert len(journalled) == sum(1 for c in steps if c.move)  # one a step, as before
