"""Many boot steps written at once: one store transaction for up to ``MAX_BATCH`` nodes.

The HTTP workers answer a known machine first and note the step (see
:mod:`pxeserver.nodes.steps`); the main process writes what they noted
(:mod:`pxeserver.nodes.recorder`) through :func:`apply_batch`: the steps of each node
folded, in order, into its record in memory and the record made, serialised and written
once (:mod:`pxeserver.nodes.fold`: the same record as writing the steps one by one), and
the records of up to ``MAX_BATCH`` nodes compare-and-swapped in one transaction
(:meth:`pxeserver.store.NodeStore.update_many`). A node that changed meanwhile (a
phone-home, an operator) makes the transaction write nothing; its steps are folded again
into what it is now and the transaction retried. Each step keeps the event id and time it
was noted with, so writing it twice changes nothing (a step the node has applied is
skipped on its own, and its node's other steps are written), and a step that reaches the
store after a later one of the same node goes where its time puts it
(:meth:`pxeserver.nodes.fold.Draft.late`). Each step that changed its node is logged as a
boot milestone, with the state it left, once the transaction is written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .. import timeline
from ..errors import PxeError, StoreUnavailable
from ..model import MAC, Node, Versioned
from ..store import MAX_BATCH, BatchConflict, BatchTooLarge
from .change import Change
from .fold import Applied, Ready, prepare
from .registry import MAX_ATTEMPTS, Registry

log = logging.getLogger(__name__)

Step = tuple[MAC, Change]


@dataclass
class BatchResult:
    """What became of the steps of one :func:`apply_batch`."""

    written: list[tuple[MAC, Change, Node]] = field(default_factory=list)  # node as written
    dropped: list[tuple[MAC, Change, str]] = field(default_factory=list)  # never will be
    failed: list[Step] = field(default_factory=list)  # the store did not answer: not written
    journalled: list[Step] = field(default_factory=list)  # kept for the store instead
    versions: dict[MAC, Versioned] = field(default_factory=dict)  # each node as written


def group(steps: Sequence[Step]) -> dict[MAC, list[Change]]:
    """The steps by node, each node's in the order given (the order they happened)."""
    by_mac: dict[MAC, list[Change]] = {}
    for mac, change in steps:
        by_mac.setdefault(mac, []).append(change)
    return by_mac


def apply_batch(
    registry: Registry, steps: Sequence[Step], known: Mapping[MAC, Versioned] | None = None
) -> BatchResult:
    """Write ``steps`` (known nodes only: a step of a node not in the store is dropped).

    ``known``: nodes as last written or read here, to start from instead of reading them
    (a stale one costs a retry, never a lost step). Never raises for the store: steps the
    store did not take are in ``failed``, and those of other transactions are written.
    """
    result = BatchResult()
    by_mac = {mac: [prepare(c, registry.clock) for c in changes]
              for mac, changes in group(steps).items()}  # fmt: skip
    macs = list(by_mac)
    for start in range(0, len(macs), MAX_BATCH):
        chunk = {mac: by_mac[mac] for mac in macs[start : start + MAX_BATCH]}
        try:
            _write_chunk(registry, chunk, known or {}, result)
        except StoreUnavailable as exc:
            log.debug("a batch of %d nodes was not written: %s", len(chunk), exc)
            result.failed += [(mac, c) for mac, ready in chunk.items() for c, _, _ in ready]
    return result


def _write_chunk(
    registry: Registry,
    chunk: dict[MAC, list[Ready]],
    known: Mapping[MAC, Versioned],
    result: BatchResult,
) -> None:
    """One transaction: each node's steps folded into its record, each record once."""
    current: dict[MAC, Versioned | None] = {m: known[m] for m in chunk if m in known}
    unread = [m for m in chunk if m not in current]
    if unread:
        found = registry.store.get_many(unread)
        current.update({m: found.get(m) for m in unread})
    for _ in range(MAX_ATTEMPTS):
        pairs: list[tuple[Versioned, Node]] = []
        folded: dict[MAC, tuple[Node, list[Applied]]] = {}
        for mac, ready in chunk.items():
            old = current.get(mac)
            if old is None:
                continue
            node, applied = registry.fold(old.node, ready)
            if applied:
                folded[mac] = node, applied
            if node is not old.node:
                pairs.append((old, node))
        try:
            written = registry.store.update_many(pairs) if pairs else []
        except BatchConflict as exc:
            current.update(exc.current)
            continue
        except BatchTooLarge:
            _split(registry, chunk, current, result)
            return
        _done(chunk, current, folded, written, result)
        return
    raise StoreUnavailable(f"{len(chunk)} nodes: gave up after {MAX_ATTEMPTS} conflicting writes")


def _split(
    registry: Registry,
    chunk: dict[MAC, list[Ready]],
    current: Mapping[MAC, Versioned | None],
    result: BatchResult,
) -> None:
    """Write ``chunk`` as two transactions: its records were too large for one."""
    if len(chunk) == 1:
        raise StoreUnavailable(f"{next(iter(chunk))}: its record is too large to write")
    macs = list(chunk)
    known = {m: v for m, v in current.items() if v is not None}
    for part in (macs[: len(macs) // 2], macs[len(macs) // 2 :]):
        _write_chunk(registry, {m: chunk[m] for m in part}, known, result)


def _done(
    chunk: dict[MAC, list[Ready]],
    current: Mapping[MAC, Versioned | None],
    folded: dict[MAC, tuple[Node, list[Applied]]],
    written: list[Versioned],
    result: BatchResult,
) -> None:
    """Record what one transaction wrote (and dropped) and log each step's milestone."""
    for mac, ready in chunk.items():
        if current.get(mac) is None:
            result.dropped += [(mac, c, "the node is no longer in the registry")
                               for c, _, _ in ready]  # fmt: skip
    for mac in chunk:
        if current.get(mac) is not None:
            result.versions[mac] = current[mac]  # type: ignore[assignment]
    result.versions.update({v.node.mac: v for v in written})
    for mac, (node, applied) in folded.items():
        for change, state, took in applied:
            result.written.append((mac, change, node))
            if change.move:
                try:
                    timeline.step_milestone(log, mac, node.hostname, state, change.kind,
                                            change.detail, took)  # fmt: skip
                except PxeError:  # pragma: no cover - a log line must not lose the batch
                    log.exception("%s: logging a milestone failed", mac)
