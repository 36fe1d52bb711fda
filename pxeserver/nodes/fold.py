"""Changes applied to a node's record in memory: one (``Registry.apply``), or all of one
node's boot steps from one read of the step logs (:mod:`pxeserver.nodes.batches`).

A :class:`Draft` holds what the changes move (the node's facts, state, times and counts)
and its timeline and recent event ids as lists that each change appends to in place; the
record is made once, when all are applied (:meth:`Draft.node`), and then serialised and
written once. Applying changes to a draft one after the other gives the same record as
applying each to the record the one before made: a change whose event id the node has
applied is skipped on its own, the timeline is cut to ``events_kept`` after each change
(a step written late goes where its time puts it among the events kept then), and so on.

The rules (see :meth:`Draft.apply`): the state moves as :func:`~pxeserver.nodes.change.advance`
says; a change whose time is before the node's newest event goes where its time puts it
(:meth:`Draft.late`); a config served for a fetch secret the node has seen is recorded
as served again when it was answered already, and otherwise not at all.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from .. import timeline
from ..model import Event, EventKind, Node, State, new_event_id
from .change import COALESCE, RECENT_IDS, STATELESS, Change, advance

# A change as it is applied: with its time and event id fixed once, so that every attempt
# of a compare-and-swap (and a write repeated after its answer was lost) applies the same
# event, which the node's recent ids then recognise.
Ready = tuple[Change, float, str]
# A change that changed the record: the state it left and how long its step took (the
# boot milestone logged once the record is written, see pxeserver.timeline).
Applied = tuple[Change, State, float | None]


def prepare(change: Change, clock: Callable[[], float]) -> Ready:
    """``change`` with its time (now, if it has none) and event id (a new one) fixed."""
    at = change.at if change.at is not None else clock()
    return change, at, change.event_id or new_event_id()


def fold(
    node: Node, steps: Sequence[Ready], events_kept: int, *, every: bool = False
) -> tuple[Node, list[Applied]]:
    """``node`` after ``steps`` in order (the same object if none changed it), and the
    steps that changed it (with ``every``, every step: one that changed nothing with the
    node as it found it)."""
    draft = Draft(node, events_kept)
    applied: list[Applied] = []
    for change, at, event_id in steps:
        if draft.apply(change, at, event_id) or every:
            applied.append((change, draft.state, draft.took(change.kind)))
    return draft.node(), applied


class Draft:
    """A node's record while changes are applied to it (see the module docstring)."""

    def __init__(self, node: Node, events_kept: int) -> None:
        self.base = node
        self.kept = events_kept
        self.changed = False
        self.uuid, self.arch, self.platform, self.ip = node.uuid, node.arch, node.platform, node.ip
        self.state = node.state
        self.first_seen, self.last_seen = node.first_seen, node.last_seen
        self.last_heartbeat = node.last_heartbeat
        self.boot_count = node.boot_count
        self.installed, self.installed_at = node.installed, node.installed_at
        self.config_issued = node.config_issued
        self.events = list(node.events)
        self.ids = list(node.recent_ids)

    def node(self) -> Node:
        """The record: the node it started from if nothing changed it."""
        if not self.changed:
            return self.base
        return self.base.replace(
            uuid=self.uuid, arch=self.arch, platform=self.platform, ip=self.ip,
            state=self.state, first_seen=self.first_seen, last_seen=self.last_seen,
            last_heartbeat=self.last_heartbeat, boot_count=self.boot_count,
            installed=self.installed, installed_at=self.installed_at,
            config_issued=self.config_issued, events=tuple(self.events),
            recent_ids=tuple(self.ids),
        )  # fmt: skip

    def took(self, kind: EventKind) -> float | None:
        """How long the step ``kind`` just applied took (as :func:`timeline.milestone`)."""
        return timeline.last_step_took(self.events, kind)

    def apply(self, change: Change, at: float, event_id: str) -> bool:
        """Apply ``change`` at ``at`` as the event ``event_id``; False if it changes
        nothing (the node applied that event already, or a config for a secret it has
        seen that was not answered yet: the caller refuses it)."""
        if event_id in self.ids:
            return False
        issued = change.config_issued
        if issued is not None and issued <= (self.config_issued or 0):
            if not change.answered:
                return False
            # Served already, by a worker whose memory had not seen the first use yet.
            self.add_event(Event(change.kind, at, self.state, f"{change.detail}; served again "
                                 "for a used secret (possible spoofing)", event_id))  # fmt: skip
            return True
        if self.events and at < self.events[-1].at:
            self.late(change, at, event_id)
            return True
        facts = change.facts
        if change.move:
            self.state = advance(self.state, change.kind)
        if facts:
            self.uuid = facts.uuid or self.uuid
            self.arch = facts.arch or self.arch
            self.platform = facts.platform or self.platform
            self.ip = facts.ip or self.ip
        self._seen(change, at)
        if change.installs and change.installs != self.installed:
            self.installed, self.installed_at = change.installs, at
        if issued is not None:
            self.config_issued = issued
        self.add_event(Event(change.kind, at, self.state, change.detail, event_id))
        return True

    def add_event(self, event: Event) -> None:
        """``event`` at the end of the timeline (or counted into the last, if it repeats
        that one within its ``COALESCE`` window), and its id among the recent ones."""
        events = self.events
        window = COALESCE.get(event.kind)
        last = events[-1] if events else None
        if (
            window is not None
            and last is not None
            and last.kind is event.kind
            and last.state is event.state
            and last.detail == event.detail
            and event.at - last.at <= window
        ):
            events[-1] = Event(
                last.kind, event.at, last.state, last.detail, last.id, last.count + 1
            )
        else:
            events.append(event)
        self._cut()
        self._remember(event.id)

    def _cut(self) -> None:
        """The timeline cut to the newest ``events_kept`` (``events[-kept:]``; 0 keeps all)."""
        if self.kept > 0 and len(self.events) > self.kept:
            del self.events[: len(self.events) - self.kept]

    def late(self, change: Change, at: float, event_id: str) -> None:
        """``change`` happened before the node's newest event but is written after it:
        boot steps are written behind the answer (:mod:`pxeserver.nodes.recorder`), so a
        machine's next step may be written first (by another worker, another pxeserver, or
        a phone-home, written at once). It goes into the timeline where its time puts it
        and counts (boots, last seen); the state is its own only if no later event is a
        boot step, and the facts it would overwrite stay as the newer events left them."""
        events = self.events
        pos = bisect.bisect_right([e.at for e in events], at)
        before = events[pos - 1].state if pos else State.DISCOVERED
        led_to = advance(before, change.kind) if change.move else before
        if not any(e.kind not in STATELESS for e in events[pos:]):
            self.state = led_to  # else a later step decided the state
        events.insert(pos, Event(change.kind, at, led_to, change.detail, event_id))
        self._cut()
        facts = change.facts
        self.uuid = self.uuid or (facts.uuid if facts else None)
        self.arch = self.arch or (facts.arch if facts else None)
        self.platform = self.platform or (facts.platform if facts else None)
        self.ip = self.ip or (facts.ip if facts else None)
        self._seen(change, at)
        self.config_issued = max(self.config_issued or 0, change.config_issued or 0) or None
        self._remember(event_id)

    def _seen(self, change: Change, at: float) -> None:
        """What any change at ``at`` counts, in time order or late: seen, heartbeat, boots."""
        self.first_seen = min(self.first_seen or at, at)
        self.last_seen = max(self.last_seen, at)
        if change.kind in (EventKind.READY, EventKind.HEARTBEAT):
            self.last_heartbeat = max(self.last_heartbeat or 0.0, at)
        if change.count_boot:
            self.boot_count += 1

    def _remember(self, event_id: str) -> None:
        """``event_id`` among the node's recent ids (the newest ``RECENT_IDS``): applied."""
        self.ids.append(event_id)
        if len(self.ids) > RECENT_IDS:
            del self.ids[: len(self.ids) - RECENT_IDS]
        self.changed = True
