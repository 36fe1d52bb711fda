"""The node registry: records, states, events and hostnames, on top of a :class:`NodeStore`.

Every change is a read, a pure change function, and a compare-and-swap write, retried when
another writer got there first. Events carry ids and the node remembers the ids it has
applied recently, so applying the same event twice (a retried write whose first answer was
lost, a journal replayed after a crash) changes nothing the second time.

A change (:class:`~pxeserver.nodes.change.Change`) moves the node's state as
:func:`~pxeserver.nodes.change.advance` says and is applied to the record in memory as
:mod:`pxeserver.nodes.fold` says (the boot steps of one node from one read of the step logs
all at once, then written once). A ``ready`` node silent for ``heartbeat_ttl`` seconds, or a
``booting``/``configured`` one silent for ``boot_timeout``, becomes ``lost``; its earlier
events stay, so the timeline shows where it stopped.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from .. import model, timeline
from ..errors import AlreadyExists, Conflict, Forbidden, HostnameTaken, NotFound, StoreUnavailable
from ..model import MAC, UNSET, Event, EventKind, Node, State, Versioned
from ..store import NodeStore
from .change import Change
from .fold import Applied, Draft, Ready, fold, prepare
from .unbooted import NeverBootedBound

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 64
# What pxeserver waits for from a node in each state that has a deadline: the lost event
# says it, so the timeline of a node that never got further tells why it is lost.
WAITED_FOR = {
    State.BOOTING: "its OS to fetch its config",
    State.CONFIGURED: "it to phone home ready (its config was served)",
    State.READY: "its next heartbeat",
}
# How long a thread's last read may stand in for the read a write starts with (see
# Registry._mutate): the length of one request, not more.
READ_REUSE_S = 1.0


class Registry:
    def __init__(
        self,
        store: NodeStore,
        *,
        hostname_pattern: str = "node-{index:03d}",
        events_kept: int = 50,
        heartbeat_ttl: float = 90,
        boot_timeout: float = 900,
        clock: Callable[[], float] = time.time,
        never_booted: NeverBootedBound | None = None,
    ) -> None:
        self.store = store
        self.never_booted = never_booted  # the bound on records nobody booted, if any
        self.hostname_pattern = hostname_pattern
        self.events_kept = events_kept
        self.heartbeat_ttl = heartbeat_ttl
        self.boot_timeout = boot_timeout
        self.clock = clock
        self._last_read = threading.local()

    # -- reads --------------------------------------------------------------------------

    def get(self, mac: MAC) -> Node | None:
        found = self.store.get(mac)
        if found is not None:
            self._last_read.seen = (found, time.monotonic())
        return found.node if found else None

    def _reuse_read(self, mac: MAC) -> Versioned | None:
        """This thread's last read of ``mac`` if it is recent, once (then it is gone).

        Serving ``/ipxe`` reads the node, renders, then records: the write's
        compare-and-swap can start from that read instead of asking the store again
        (one round trip fewer per request). It only ever saves the read for a write: a
        stale revision makes the compare-and-swap fail and the loop reads afresh, and a
        change that turns out to do nothing on it is decided again on a fresh read.
        """
        seen = getattr(self._last_read, "seen", None)
        self._last_read.seen = None
        if seen is None or seen[0].node.mac != mac:
            return None
        if time.monotonic() - seen[1] > READ_REUSE_S:
            return None
        return seen[0]

    def require(self, mac: MAC) -> Node:
        node = self.get(mac)
        if node is None:
            raise NotFound(f"no node with MAC {mac}")
        return node

    def all(self) -> list[Node]:
        return [v.node for v in self.store.scan()]

    def ping(self) -> None:
        """Raise StoreUnavailable if the store does not answer."""
        self.store.ping()

    def close(self) -> None:
        self.store.close()

    # -- the one write path ---------------------------------------------------------------

    def _mutate(
        self,
        mac: MAC,
        change: Callable[[Node], Node | None],
        *,
        create: bool,
    ) -> Node:
        """Apply ``change`` to the stored node with compare-and-swap, retrying on conflict.

        ``change`` returns the new node, or None for "nothing to do". With ``create``, an
        unknown MAC starts as a blank node that ``change`` fills in.
        """
        reused = self._reuse_read(mac)
        for attempt in range(MAX_ATTEMPTS):
            current = reused or self.store.get(mac)
            if current is None:
                if not create:
                    raise NotFound(f"no node with MAC {mac}")
                blank = Node(mac=mac, first_seen=self.clock(), last_seen=self.clock())
                new = change(blank)
                if new is None:
                    return blank
                try:
                    with self._place_for(new):
                        return self.store.create(new, self._hostname_for(mac)).node
                except AlreadyExists:
                    continue
            new = change(current.node)
            if new is None or new == current.node:
                if reused is not None:  # decide "nothing to do" on a fresh read only
                    reused = None
                    continue
                return current.node
            reused = None
            try:
                return self.store.update(current, new).node
            except HostnameTaken:
                raise
            except Conflict:
                # Someone else wrote first: back off a little and apply to their result.
                time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise StoreUnavailable(f"{mac}: gave up after {MAX_ATTEMPTS} conflicting writes")

    def _place_for(self, node: Node) -> contextlib.AbstractContextManager[None]:
        """Where a new record goes: within the bound on never-booted ones, if it is one."""
        if self.never_booted is None or not node.never_booted:
            return contextlib.nullcontext()
        return self.never_booted.place(self.store)

    def _hostname_for(self, mac: MAC) -> Callable[[int], str]:
        return lambda index: model.hostname_from_pattern(self.hostname_pattern, index, mac)

    def _with_event(self, node: Node, event: Event) -> Node:
        """``node`` with ``event`` added to its timeline (see :meth:`Draft.add_event`)."""
        draft = Draft(node, self.events_kept)
        draft.add_event(event)
        return draft.node()

    def apply(self, mac: MAC, change: Change, *, create: bool = True) -> Node:
        """Record that ``change`` happened to the machine ``mac``. Idempotent on event id."""
        node = self._mutate(mac, self.change_fn(change), create=create)
        if change.move:
            timeline.milestone(log, node, change.kind, change.detail)
        return node

    def change_fn(self, change: Change) -> Callable[[Node], Node | None]:
        """The pure function ``apply`` runs on the stored node: the node after ``change``,
        or None if its event id was applied already. The journal uses it on cached nodes."""
        # One time and event id for every attempt of this call: if a write landed but its
        # answer was lost (a deadline, a leader change), the retry after the conflict finds
        # the id and stops, instead of recording the event a second time.
        ready = prepare(change, self.clock)

        def fn(node: Node) -> Node | None:
            new, applied = fold(node, (ready,), self.events_kept)
            return new if applied else None

        return fn

    def fold(
        self, node: Node, steps: Sequence[Ready], *, every: bool = False
    ) -> tuple[Node, list[Applied]]:
        """``node`` after ``steps`` (each :func:`~pxeserver.nodes.fold.prepare`'d once) in
        order, made a record once, and the steps that changed it (see
        :func:`pxeserver.nodes.fold.fold`): the same record as applying each with
        :meth:`change_fn` to the record the one before made."""
        return fold(node, steps, self.events_kept, every=every)

    # -- the node's own calls -------------------------------------------------------------

    def check_token(self, mac: MAC, token: str | None) -> Node:
        node = self.require(mac)
        if not token:
            raise Forbidden(f"{mac}: the node token is missing", missing=True)
        if not hmac.compare_digest(node.token.encode(), token.encode()):
            raise Forbidden(f"{mac}: the node token is wrong")
        return node

    def phone_home(
        self,
        mac: MAC,
        token: str | None,
        kind: EventKind,
        detail: str = "",
        *,
        installs: str | None = None,
    ) -> Node:
        """``ready`` or ``heartbeat`` from the node itself, which must present its token.
        ``installs``: the disk-installing profile a ``ready`` node now has on its disk."""
        self.check_token(mac, token)
        return self.apply(mac, Change(kind, detail, installs=installs), create=False)

    # -- operators -------------------------------------------------------------------------

    def set(
        self,
        mac: MAC,
        *,
        profile: object = UNSET,
        labels: Mapping[str, str | None] | None = None,
        hostname: str | None = None,
        reinstall: bool = False,
    ) -> Node:
        """Assign a profile (None clears it), merge labels (None removes one), rename;
        ``reinstall`` forgets what the node installed on its disk, so that its next boot
        network-boots (and installs) its profile again."""

        def fn(node: Node) -> Node:
            parts = []
            changed = node
            if profile is not UNSET and profile != node.profile:
                changed = changed.replace(profile=profile)
                parts.append(f"profile {profile or '(from groups)'}")
            if labels:
                merged = dict(node.labels)
                for k, v in labels.items():
                    if v is None:
                        merged.pop(k, None)
                    else:
                        merged[k] = v
                if merged != node.labels:
                    changed = changed.replace(labels=merged)
                    parts.append(
                        "labels " + ",".join(f"{k}={v}" for k, v in sorted(merged.items()))
                    )
            if hostname and hostname != node.hostname:
                changed = changed.replace(hostname=hostname)
                parts.append(f"hostname {hostname}")
            if reinstall:
                was = f" (the disk holds {node.installed!r})" if node.installed else ""
                changed = changed.replace(installed=None, installed_at=None)
                parts.append(f"reinstall: the next boot installs from the network{was}")
            if not parts:
                return node
            event = Event(EventKind.OPERATOR, self.clock(), node.state, "set " + "; ".join(parts))
            return self._with_event(changed, event)

        node = self._mutate(mac, fn, create=False)
        log.info("%s %s: changed by an operator", mac, node.hostname)
        return node

    def forget(self, mac: MAC) -> bool:
        gone = self.store.delete(mac)
        if gone:
            log.info("%s: forgotten by an operator", mac)
        return gone

    # -- time -------------------------------------------------------------------------------

    def deadline(self, state: State, seen: float, heard: float | None) -> float | None:
        """When a node in ``state``, last seen and heard from then, is past its deadline."""
        if state is State.READY:
            return (heard or seen) + self.heartbeat_ttl
        if state in (State.BOOTING, State.CONFIGURED):
            return seen + self.boot_timeout
        return None

    def silent_for(self, node: Node, now: float) -> float | None:
        """Seconds past the node's deadline, or None if it is within it (or has none)."""
        deadline = self.deadline(node.state, node.last_seen, node.last_heartbeat)
        return now - deadline if deadline is not None and now > deadline else None

    def expire(self, due: Iterable[MAC] | None = None) -> list[Node]:
        """Mark the nodes that have gone silent past their deadline as ``lost``: of ``due``
        (those an index of deadlines says are past theirs: :mod:`pxeserver.nodes.deadlines`)
        or else of every node (a full scan). Each is decided again on its current record."""
        now = self.clock()
        if due is None:
            due = [v.node.mac for v in self.store.scan() if self.silent_for(v.node, now)]
        lost = []
        for mac in due:
            node = self._mark_lost(mac, now)
            if node is not None:
                log.warning("%s %s: lost (%s)", mac, node.hostname, node.events[-1].detail,
                            extra={"mac": mac.value, "hostname": node.hostname,
                                   "event": "lost"})  # fmt: skip
                lost.append(node)
        return lost

    def _mark_lost(self, mac: MAC, now: float) -> Node | None:
        """The node marked lost; None if it spoke up since it was found silent (or is gone)."""
        marked: list[Node] = []

        def fn(current: Node) -> Node | None:
            marked.clear()  # this attempt's (an attempt that lost a compare-and-swap retries)
            if self.silent_for(current, now) is None:
                return None
            last = max(current.last_seen, current.last_heartbeat or 0.0)
            detail = (f"silent for {int(now - last)} s while {current.state}; "
                      f"waited for {WAITED_FOR[current.state]}")  # fmt: skip
            event = Event(EventKind.LOST, now, State.LOST, detail)
            marked.append(self._with_event(current.replace(state=State.LOST), event))
            return marked[0]

        with contextlib.suppress(NotFound):
            node = self._mutate(mac, fn, create=False)
            return node if marked else None
        return None  # forgotten since
