"""What the UDP services saw, held in memory, and written to the registry in the background.

ProxyDHCP and TFTP must answer within milliseconds even when the store is slow or down, so
they never write to it themselves. They tell :class:`Sightings` what they saw:

- the in-memory view (:meth:`Sightings.seen`, :meth:`Sightings.machine_at`,
  :meth:`Sightings.node`) answers at once: which MAC had this IP address, what its firmware
  said, and the node record as it was last written;
- the changes go into a bounded queue that one writer thread applies with
  :meth:`pxeserver.nodes.registry.Registry.apply`, in order, each with its own event id so that a
  retried write is applied once. Repeated sightings of a MAC still waiting in the queue are
  merged into one (a firmware retries DISCOVER every few seconds; a flood of them is one
  write). When the store is unavailable the writer waits and retries; when the queue is
  full, new changes are dropped and counted.

A flood of DISCOVERs from random MACs must not become a stream of new records: a change for a
MAC the registry does not know yet takes a token from one budget shared by all clients
(``new_macs_per_second``, twice that in a burst; ``limits.new_macs_per_second``). Without a
token it waits, with the MAC's later changes, in a bounded set of deferred MACs
(``deferred``) that the writer releases one MAC a token; MACs seen more than once (a real
machine retries its DISCOVER, asks on port 4011, fetches its loader) go first, since a flood
of random MACs shows each once. When the set is full the oldest MAC's changes are dropped and
counted (``limited``). So a rack that powers on at once is recorded in full, a little later,
and a flood writes at most the budget. MACs the registry knows (read once when the writer
starts, then every node written or admitted here) are never limited, so known machines keep
booting and being recorded through a flood; a new machine is answered by ProxyDHCP at once
whatever its sighting's fate, and recorded when it fetches its iPXE script over HTTP.

:meth:`admit` decides whether a change enters the queue; :meth:`_write` is the one place that
writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from .. import metrics
from ..errors import PxeError, StoreUnavailable
from ..model import MAC, Machine, Node, new_event_id
from ..ratelimit import TokenBucket
from ..store import NodeFeed
from .registry import Change, Registry

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
MAX_REMEMBERED = 100_000
RETRY_MIN, RETRY_MAX = 0.5, 10.0
NEW_MACS_PER_SECOND = 20.0
MAX_DEFERRED = 10_000  # MACs waiting for the new-MAC budget
MAX_DEFERRED_CHANGES = 8  # changes kept for one deferred MAC
LIMIT_LOG_WINDOW = 60.0


@dataclass
class _Pending:
    mac: MAC
    change: Change
    key: tuple[MAC, str] | None
    merged: int = 0


@dataclass
class _Deferred:
    """A MAC the registry does not know, waiting for the new-MAC budget: its changes in order
    (with their merge keys) and how often it was seen."""

    changes: list[tuple[Change, str | None]]
    seen: int = 1


class Sightings:
    def __init__(
        self,
        registry: Registry,
        *,
        max_pending: int = MAX_PENDING,
        retry_min: float = RETRY_MIN,
        new_macs_per_second: float = NEW_MACS_PER_SECOND,
        max_deferred: int = MAX_DEFERRED,
        feed: NodeFeed | None = None,
    ) -> None:
        self.registry = registry
        # Where the known MACs are read from at start: the feed's heads when given (serve's
        # main process over SQLite: no timelines; reading every node left ~20 MB of its
        # heap fragmented for good with 10,000 nodes), else every node from the registry.
        self.feed = feed
        self.max_pending = max_pending
        self.retry_min = retry_min  # first wait after the store did not answer; doubles
        self.new_macs = TokenBucket(new_macs_per_second, max(1.0, 2 * new_macs_per_second))
        self.max_deferred = max_deferred
        self.counters = {"queued": 0, "merged": 0, "dropped": 0, "deferred": 0, "limited": 0,
                         "written": 0, "failed": 0}  # fmt: skip
        # MACs waiting for the budget: seen once, and seen again (released first)
        self._once: OrderedDict[MAC, _Deferred] = OrderedDict()
        self._again: OrderedDict[MAC, _Deferred] = OrderedDict()
        # MACs the registry has, as far as we learnt (the most recent MAX_REMEMBERED)
        self._known: OrderedDict[MAC, None] = OrderedDict()
        self._limited_logged = float("-inf")  # when the last "limited" line was logged
        self._machines: OrderedDict[MAC, Machine] = OrderedDict()
        self._by_ip: dict[str, MAC] = {}
        self._nodes: OrderedDict[MAC, Node] = OrderedDict()
        self._queue: deque[_Pending] = deque()
        self._keyed: dict[tuple[MAC, str], _Pending] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- the in-memory view ------------------------------------------------------------------

    def seen(self, machine: Machine) -> None:
        """Remember what a machine's firmware said (facts merge; the newest IP wins)."""
        with self._lock:
            old = self._machines.pop(machine.mac, None)
            if old is not None:
                machine = Machine(
                    machine.mac,
                    machine.uuid or old.uuid,
                    machine.arch or old.arch,
                    machine.platform or old.platform,
                    machine.ip or old.ip,
                )
            self._machines[machine.mac] = machine
            if machine.ip:
                self._by_ip[machine.ip] = machine.mac
            while len(self._machines) > MAX_REMEMBERED:
                mac, gone = self._machines.popitem(last=False)
                if gone.ip and self._by_ip.get(gone.ip) == mac:
                    del self._by_ip[gone.ip]

    def machine_at(self, ip: str) -> Machine | None:
        with self._lock:
            mac = self._by_ip.get(ip)
            return self._machines.get(mac) if mac is not None else None

    def machine(self, mac: MAC) -> Machine | None:
        with self._lock:
            return self._machines.get(mac)

    def node(self, mac: MAC) -> Node | None:
        """The node as the writer last wrote or read it; None if not written from here."""
        with self._lock:
            return self._nodes.get(mac)

    def remember(self, node: Node) -> None:
        with self._lock:
            self._know(node.mac)
            self._nodes.pop(node.mac, None)
            self._nodes[node.mac] = node
            while len(self._nodes) > MAX_REMEMBERED:
                self._nodes.popitem(last=False)

    # -- the queue ---------------------------------------------------------------------------

    def admit(self, mac: MAC, change: Change) -> str | None:
        """Why a new change may not enter the queue now (the lock is held): ``dropped`` when
        the queue is full, ``deferred`` when it is about a MAC the registry does not know and
        the budget for new MACs is spent; None to queue it."""
        if len(self._queue) >= self.max_pending:
            return "dropped"
        if mac not in self._known:
            if not self.new_macs.take():
                return "deferred"
            self._know(mac)  # it will be written: its next changes need no token
        return None

    def _defer(self, mac: MAC, change: Change, merge: str | None) -> bool:
        """Keep a change for a MAC waiting for the budget (the lock is held)."""
        waiting = self._once.get(mac) or self._again.get(mac)
        if waiting is None:
            self._once[mac] = _Deferred([(change, merge)])
            self.counters["deferred"] += 1
            while len(self._once) + len(self._again) > self.max_deferred:
                oldest = self._once if self._once else self._again
                _, gone = oldest.popitem(last=False)
                self.counters["limited"] += len(gone.changes)
                metrics.limited.labels(what="new-mac").inc(len(gone.changes))
                self._note_limited()
            self._changed.notify()
            return True
        waiting.seen += 1
        if waiting.seen == 2 and mac in self._once:  # seen again: a machine, not noise
            self._again[mac] = self._once.pop(mac)
        last = waiting.changes[-1]
        if merge is not None and last[1] == merge:
            waiting.changes[-1] = (change, merge)
            self.counters["merged"] += 1
        elif len(waiting.changes) < MAX_DEFERRED_CHANGES:
            waiting.changes.append((change, merge))
        else:
            self.counters["dropped"] += 1
            return False
        return True

    def _release_locked(self) -> bool:
        """Queue the changes of one deferred MAC if the budget has a token (lock held)."""
        if not (self._again or self._once) or not self.new_macs.take():
            return False
        mac, waiting = (self._again or self._once).popitem(last=False)
        self._know(mac)
        for change, merge in waiting.changes:
            key = (mac, merge) if merge else None
            item = _Pending(mac, change, key)
            self._queue.append(item)
            if key:
                self._keyed[key] = item
            self.counters["queued"] += 1
        return True

    def deferred(self) -> int:
        """MACs waiting for the new-MAC budget."""
        with self._lock:
            return len(self._once) + len(self._again)

    def _note_limited(self) -> None:
        """One log line a minute while sightings of new MACs are being dropped (lock held)."""
        now = time.monotonic()
        if now - self._limited_logged >= LIMIT_LOG_WINDOW:
            log.warning(
                "sightings of MACs not in the registry arrive faster than "
                "limits.new_macs_per_second (%.0f/s) for longer than %d of them can wait: "
                "%d dropped so far (a flood of DISCOVERs from random MACs?); known machines "
                "are still recorded",
                self.new_macs.rate, self.max_deferred, self.counters["limited"],
            )  # fmt: skip
            self._limited_logged = now

    def submit(self, mac: MAC, change: Change, *, merge: str | None = None) -> bool:
        """Queue ``change`` for ``mac``; never blocks. With ``merge``, a change of the same
        kind for the same MAC still waiting is replaced by this one (its count kept).
        Returns False if the change was dropped."""
        if change.event_id is None:
            change = Change(change.kind, change.detail, change.facts, change.at or time.time(),
                            new_event_id(), change.move, change.count_boot)  # fmt: skip
        with self._lock:
            key = (mac, merge) if merge else None
            waiting = self._keyed.get(key) if key else None
            if waiting is not None:
                waiting.change = change
                waiting.merged += 1
                self.counters["merged"] += 1
                return True
            if mac in self._once or mac in self._again:
                return self._defer(mac, change, merge)  # after its earlier changes
            refused = self.admit(mac, change)
            if refused == "deferred":
                return self._defer(mac, change, merge)
            if refused is not None:
                self.counters[refused] += 1
                return False
            item = _Pending(mac, change, key)
            self._queue.append(item)
            if key:
                self._keyed[key] = item
            self.counters["queued"] += 1
            self._changed.notify()
            return True

    def pending(self) -> int:
        """Changes not written yet (the one being written stays queued until it is)."""
        with self._lock:
            return len(self._queue)

    # -- the writer --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="sightings", daemon=True)
            self._thread.start()

    def stop(self, flush: float = 2.0) -> None:
        self.flush(flush)
        with self._lock:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        left, deferred = self.pending(), self.deferred()
        if left or deferred:
            log.warning("%d sightings were not written to the registry before stopping (and "
                        "%d new MACs were waiting for the budget)", left, deferred)  # fmt: skip

    def flush(self, timeout: float) -> bool:
        """Wait until the queue is empty (True) or ``timeout`` seconds pass (False). MACs
        waiting for the new-MAC budget are not waited for: they go at the budget's pace."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._changed.wait(min(left, 0.05))
        return True

    def _know(self, mac: MAC) -> None:
        """Remember that the registry has ``mac`` (the lock is held)."""
        self._known[mac] = None
        self._known.move_to_end(mac)
        while len(self._known) > MAX_REMEMBERED:
            self._known.popitem(last=False)

    def _learn_known(self) -> None:
        """Read which MACs the registry has, so that known machines are never limited."""
        try:
            if self.feed is not None:
                macs = [head.mac for head in self.feed.snapshot()[0] if head.text is not None]
            else:
                macs = [node.mac for node in self.registry.all()]
            del macs[MAX_REMEMBERED:]
        except PxeError as exc:  # the store is down: they become known as they are written
            log.info("could not read the registry's MACs yet (%s); known machines are learnt "
                     "as they are recorded", exc)  # fmt: skip
            return
        with self._lock:
            for mac in macs:
                self._know(mac)

    def _run(self) -> None:
        self._learn_known()
        delay = self.retry_min
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    if self._release_locked():
                        break
                    # deferred MACs wait for the budget's next token
                    deferred = bool(self._once or self._again)
                    self._changed.wait(1.0 / self.new_macs.rate if deferred else None)
                if self._stopping:
                    return
                item = self._queue[0]
                if item.key:
                    self._keyed.pop(item.key, None)  # from now on a new sighting queues anew
                self._busy = True
            ok = self._write(item)
            with self._lock:
                self._busy = False
                if ok:
                    self._queue.popleft()
                self._changed.notify_all()
            if ok:
                delay = self.retry_min
            else:
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    def _write(self, item: _Pending) -> bool:
        """Apply one change. False: try again later (the store did not answer)."""
        try:
            node = self.registry.apply(item.mac, item.change)
        except StoreUnavailable as exc:
            if self.counters["failed"] % 100 == 0:
                log.warning("%s: cannot record %s yet, the store is unavailable: %s",
                            item.mac, item.change.kind, exc)  # fmt: skip
            self.counters["failed"] += 1
            return False
        except PxeError as exc:
            log.error("%s: recording %s failed: %s", item.mac, item.change.kind, exc)
            return True  # not retryable: drop it
        except Exception:
            log.exception("%s: recording %s failed", item.mac, item.change.kind)
            return True
        self.counters["written"] += 1
        self.remember(node)
        return True
