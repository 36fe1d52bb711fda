"""Booting through a store outage: the cache, the journal and the replayer put together.

The daemon uses this for the etcd backend (the embedded SQLite store is on the same disk
as the journal would be, so it has nothing to fall back to). Three pieces:

- :class:`GuardedStore` wraps the real store. Every node read from or written to it is put
  in the local :class:`~pxeserver.nodes.cache.NodeCache`. After a call failed with
  ``StoreUnavailable`` it fails the next calls at once for a short, growing while (0.5 s
  up to 5 s) instead of letting each one wait out the store deadline; when the while is
  over, one call probes the store. A hung etcd costs one deadline per while, not one per
  request.
- :class:`ResilientRegistry` is the registry the boot service talks to. When the store
  does not answer, ``get`` returns the cached node, and ``apply`` (sightings, iPXE script
  and cloud-config served, ``ready``, heartbeats) appends the change to the durable
  :class:`~pxeserver.nodes.journal.Journal`, puts the changed node in the cache and returns it:
  a known machine boots with its profile and the caller sees success. A machine the cache
  does not know still gets ``StoreUnavailable`` (``/ipxe`` answers 503 with
  ``Retry-After``; iPXE retries): without its record pxeserver cannot know whether an
  operator assigned it a profile, and a guess could boot the wrong one. While a node has
  journal entries waiting, its later changes queue behind them, so the store sees them in
  the order they happened. Sightings of machines not in the cache are journalled too (up
  to :data:`MAX_UNKNOWN` machines) and create them on replay. Operator writes (``set``,
  ``forget``) are not journalled: an operator sees the 503 and decides.
- :class:`Replayer`, a thread of the main process only, applies the journal to the store
  in order once it answers again and removes the entries the store took, a batch at a
  time. Entries carry their event ids, so replaying one twice changes nothing (see
  :mod:`pxeserver.nodes.journal`).

The reaper skips its rounds while the journal is not empty: the stored ``last_seen`` and
heartbeat times are behind until it is replayed, and would make live nodes look lost.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from .. import metrics, timeline
from ..errors import NotFound, PxeError, StoreUnavailable
from ..model import MAC, EventKind, Node, Versioned, new_event_id
from ..store import HostnameFor, NodeStore
from .batches import BatchResult, Step, apply_batch, group
from .cache import LOCAL_REVISION, NodeCache
from .change import RECENT_IDS, Change
from .fold import prepare
from .journal import Entry, Journal
from .registry import Registry

log = logging.getLogger(__name__)

T = TypeVar("T")
BREAK_MIN, BREAK_MAX = 0.5, 5.0
# Entries replayed are removed from the journal a batch at a time (one fsync per batch).
# pxeserver killed mid-batch replays the batch again, which the event ids make harmless as
# long as a node remembers them: a batch must be shorter than the ids a node keeps.
REPLAY_BATCH = 32
assert REPLAY_BATCH < RECENT_IDS
# Sightings (ProxyDHCP, TFTP) of machines not in the registry are journalled too, so that
# the sightings writer is never stuck behind one and every MAC's changes stay in order;
# at most this many such machines at a time, so that a flood of made-up MACs during an
# outage does not fill the disk (beyond it they wait in the sightings queue in memory).
MAX_UNKNOWN = 1000
SIGHTINGS = (EventKind.DHCP, EventKind.TFTP)


class GuardedStore:
    """A store whose every answer fills the node cache, and that stops asking for a
    while after the store failed (see the module docstring)."""

    def __init__(
        self,
        store: NodeStore,
        cache: NodeCache,
        journal: Journal,
        *,
        break_min: float = BREAK_MIN,
        break_max: float = BREAK_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache = cache
        self.journal = journal
        self.break_min = break_min
        self.break_max = break_max
        self.clock = clock
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._delay = break_min
        self._last_error = ""

    def __repr__(self) -> str:
        return repr(self.store)

    @property
    def down(self) -> bool:
        """True while calls fail at once after a failure."""
        with self._lock:
            return self.clock() < self._down_until

    def _guard(self, fn: Callable[[], T]) -> T:
        with self._lock:
            now = self.clock()
            left = self._down_until - now
            last = self._last_error
            if left <= 0 and self._down_until:
                # The while is over: this call probes the store, the others keep failing
                # at once until it is back (or the next while is over).
                self._down_until = now + self._delay
        if left > 0:
            raise StoreUnavailable(f"{last} (not asked again for {left:.1f} s)")
        try:
            result = fn()
        except StoreUnavailable as exc:
            with self._lock:
                if self._down_until == 0.0:  # the first failure of a streak
                    log.warning("the store does not answer: %s; known nodes boot from the "
                                "local cache and their writes are journalled", exc)  # fmt: skip
                    self._delay = self.break_min
                else:
                    self._delay = min(self._delay * 2, self.break_max)
                self._down_until = self.clock() + self._delay
                self._last_error = str(exc)
            raise
        with self._lock:
            if self._down_until:
                log.warning("the store answers again")
            self._down_until = 0.0
        return result

    def _remember(self, found: Versioned, pending: set[MAC] | None = None) -> None:
        mac = found.node.mac
        waiting = mac in pending if pending is not None else self.journal.pending(mac)
        if not waiting:  # else the cache holds the journal's newer view of the node
            self.cache.put(found.node, found.revision)

    def get(self, mac: MAC) -> Versioned | None:
        found = self._guard(lambda: self.store.get(mac))
        if found is not None:
            self._remember(found)
        return found

    def scan(self) -> list[Versioned]:
        found = self._guard(self.store.scan)
        pending = self.journal.macs()
        for versioned in found:
            self._remember(versioned, pending)
        self.cache.retain({v.node.mac for v in found} | pending)
        return found

    def retain(self, present: set[MAC]) -> None:
        """Forget the cached nodes the store no longer has (it has ``present``: every node
        at some moment), except those the journal holds writes for."""
        self.cache.retain(present | self.journal.macs())

    def forget(self, gone: list[MAC]) -> None:
        """Forget the cached nodes ``gone`` from the store (another process or pxeserver
        deleted them), except those the journal holds writes for."""
        pending = self.journal.macs()
        for mac in gone:
            if mac not in pending:
                self.cache.delete(mac)

    def create(self, node: Node, hostname_for: HostnameFor) -> Versioned:
        created = self._guard(lambda: self.store.create(node, hostname_for))
        self._remember(created)
        return created

    def update(self, old: Versioned, node: Node) -> Versioned:
        updated = self._guard(lambda: self.store.update(old, node))
        self._remember(updated)
        return updated

    def get_many(self, macs: Sequence[MAC]) -> dict[MAC, Versioned]:
        found = self._guard(lambda: self.store.get_many(macs))
        self._remember_many(list(found.values()))
        return found

    def update_many(self, pairs: Sequence[tuple[Versioned, Node]]) -> list[Versioned]:
        written = self._guard(lambda: self.store.update_many(pairs))
        self._remember_many(written)
        return written

    def _remember_many(self, found: list[Versioned]) -> None:
        pending = self.journal.macs() if found else set()
        self.cache.put_many([(v.node, v.revision) for v in found if v.node.mac not in pending])

    def delete(self, mac: MAC, revision: int | None = None) -> bool:
        gone = self._guard(lambda: self.store.delete(mac, revision))
        self.cache.delete(mac)
        return gone

    def ping(self) -> None:
        self._guard(self.store.ping)

    def close(self) -> None:
        self.store.close()
        self.cache.close()
        self.journal.close()


class ResilientRegistry(Registry):
    """The registry over a :class:`GuardedStore`: cache for reads and journal for writes
    when the store does not answer (see the module docstring)."""

    def __init__(self, store: NodeStore, cache: NodeCache, journal: Journal, **kw: Any) -> None:
        self.guarded = GuardedStore(store, cache, journal)
        super().__init__(self.guarded, **kw)
        self.cache = cache
        self.journal = journal

    def get(self, mac: MAC) -> Node | None:
        if self.journal.pending(mac):
            cached = self.cache.get(mac)
            if cached is not None:
                return cached  # the store is behind until the journal is replayed
        try:
            return super().get(mac)
        except StoreUnavailable:
            cached = self.cache.get(mac)
            if cached is None:
                raise
            log.debug("%s: read from the local cache, the store is unavailable", mac)
            return cached

    def apply(self, mac: MAC, change: Change, *, create: bool = True) -> Node:
        # The time and event id are fixed now, so that the store and the journal record
        # the same event: a write that landed although its answer was lost, and then
        # replayed from the journal, is recognised by its id.
        change = dataclasses.replace(
            change,
            at=change.at if change.at is not None else self.clock(),
            event_id=change.event_id or new_event_id(),
        )
        if not self.journal.pending(mac):
            try:
                return super().apply(mac, change, create=create)
            except StoreUnavailable as exc:
                log.debug("%s: journalling %s: %s", mac, change.kind, exc)
        return self._journal(mac, change, create)

    def apply_batch(
        self, steps: Sequence[Step], known: Mapping[MAC, Versioned] | None = None
    ) -> BatchResult:
        """Boot steps written together (:func:`~pxeserver.nodes.batches.apply_batch`), none
        lost: the steps of a node with journal entries waiting queue behind them, and the
        steps the store did not take are journalled (one fsync for all of them)."""
        waiting = self.journal.macs()
        direct = [(mac, c) for mac, c in steps if mac not in waiting]
        result = apply_batch(self, direct, known) if direct else BatchResult()
        behind = [(mac, c) for mac, c in steps if mac in waiting] + result.failed
        result.failed = []
        if behind:
            self._journal_steps(behind)
            result.journalled = behind
        return result

    def _journal_steps(self, steps: list[Step]) -> None:
        """Journal boot steps of known nodes; their cached records move on with them."""
        added = self.journal.append_many([(mac, c, False) for mac, c in steps])
        metrics.journal_entries.labels(outcome="journalled").inc(added)
        metrics.journal_depth.set(self.journal.depth())
        moved = []
        for mac, changes in group(steps).items():
            cached = self.cache.get(mac)
            if cached is None:
                continue
            node, applied = self.fold(cached, [prepare(c, self.clock) for c in changes],
                                      every=True)  # fmt: skip
            for change, state, took in applied:
                if change.move:
                    timeline.step_milestone(log, mac, node.hostname, state, change.kind,
                                            change.detail + " (journalled)", took)  # fmt: skip
            if node is not cached:
                moved.append((node, LOCAL_REVISION))
        self.cache.put_many(moved)

    def _journal(self, mac: MAC, change: Change, create: bool) -> Node:
        cached = self.cache.get(mac)
        if cached is None:
            return self._journal_unknown(mac, change, create)
        node = self.change_fn(change)(cached) or cached
        if self.journal.append(mac, change):
            metrics.journal_entries.labels(outcome="journalled").inc()
        self.cache.put(node)
        metrics.journal_depth.set(self.journal.depth())
        if change.move:
            timeline.milestone(log, node, change.kind, change.detail + " (journalled)")
        return node

    def _journal_unknown(self, mac: MAC, change: Change, create: bool) -> Node:
        """A sighting of a machine the cache does not know: journalled, to create it on
        replay. Returned as the blank node it would start as; it is not cached, so
        ``/ipxe`` still answers 503 for it until the store has its record."""
        if not (create and change.kind in SIGHTINGS):
            raise StoreUnavailable(
                f"{mac}: the store is unavailable and this node is not in the local cache"
            )
        if not self.journal.pending(mac) and self.journal.unknown() >= MAX_UNKNOWN:
            raise StoreUnavailable(
                f"{mac}: the store is unavailable and {MAX_UNKNOWN} unknown machines wait "
                "in the journal already"
            )
        if self.journal.append(mac, change, creates=True):
            metrics.journal_entries.labels(outcome="journalled").inc()
        metrics.journal_depth.set(self.journal.depth())
        blank = Node(mac=mac, hostname=self._hostname_for(mac)(0))
        return self.change_fn(change)(blank) or blank

    def replay(self, entry: Entry) -> Node:
        """Apply one journal entry to the store (never to the journal again)."""
        return self._mutate(entry.mac, self.change_fn(entry.change), create=entry.creates)

    def journal_empty(self) -> bool:
        """No write waits in the journal (the store is not behind this process)."""
        return self.journal.depth() == 0

    def expire(self, due: Iterable[MAC] | None = None) -> list[Node]:
        if self.journal.depth():
            log.debug("reaper: waiting for the journal to be replayed first")
            return []
        return super().expire(due)


class Replayer:
    """Applies the journal to the store, oldest entry first, whenever the store answers."""

    def __init__(
        self, registry: ResilientRegistry, *, interval: float = 0.5, max_delay: float = 5.0
    ) -> None:
        self.registry = registry
        self.journal = registry.journal
        self.interval = interval
        self.max_delay = max_delay
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="replayer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        left = self.journal.depth()
        if left:
            log.warning("%d journalled writes wait for the store; replayed at the next start",
                        left)  # fmt: skip

    def _run(self) -> None:
        delay = 0.0  # replay what an earlier run left at once
        while not self._stopping.wait(delay):
            try:
                self.replay()
                delay = self.interval
            except StoreUnavailable:
                delay = min(max(delay, self.interval) * 2, self.max_delay)
            except Exception:
                log.exception("replaying the journal failed; trying again")
                delay = self.max_delay
            metrics.journal_depth.set(self.journal.depth())

    def replay(self) -> int:
        """Apply entries until the journal is empty; how many were replayed. Raises
        StoreUnavailable (after keeping what it did) when the store stops answering."""
        done = 0
        started = time.monotonic()
        while not self._stopping.is_set():
            batch = self.journal.head(REPLAY_BATCH)
            if not batch:
                break
            if done == 0:
                log.info("replaying %d journalled writes", self.journal.depth())
            done += self._batch(batch)
        if done:
            log.info("replayed %d journalled writes in %.1f s", done,
                     time.monotonic() - started)  # fmt: skip
        return done

    def _batch(self, batch: list[Entry]) -> int:
        """Apply ``batch`` in order, then remove what was applied (also when the store
        stopped answering part way: the rest stays for the next attempt)."""
        outcomes: list[tuple[int, str]] = []
        last: dict[MAC, Node] = {}
        try:
            for entry in batch:
                outcome, node = self._one(entry)
                outcomes.append((entry.seq, outcome))
                if node is not None:
                    last[entry.mac] = node
        finally:
            self.journal.done_many(outcomes)
            for _, outcome in outcomes:
                metrics.journal_entries.labels(outcome=outcome).inc()
        waiting = self.journal.macs()
        for mac, node in last.items():
            if mac not in waiting:
                self.registry.cache.put(node)
        return len(outcomes)

    def _one(self, entry: Entry) -> tuple[str, Node | None]:
        try:
            return "replayed", self.registry.replay(entry)
        except StoreUnavailable:
            raise
        except NotFound:
            log.warning("%s: dropping a journalled %s: the node is no longer in the registry",
                        entry.mac, entry.change.kind)  # fmt: skip
        except PxeError as exc:
            log.error("%s: dropping a journalled %s: %s", entry.mac, entry.change.kind, exc)
        return "dropped", None
