"""What the UDP services saw, held in memory, and written to the registry in the background.

ProxyDHCP and TFTP must answer within milliseconds even when the store is slow or down, so
they never write to it themselves. They tell :class:`Sightings` what they saw:

- the in-memory view (:meth:`Sightings.seen`, :meth:`Sightings.machine_at`,
  :meth:`Sightings.node`) answers at once: which MAC had this IP address, what its firmware
  said, and the node record as it was last written;
- the changes go into a bounded queue that one writer thread applies with
  :meth:`pxeserver.registry.Registry.apply`, in order, each with its own event id so that a
  retried write is applied once. Repeated sightings of a MAC still waiting in the queue are
  merged into one (a firmware retries DISCOVER every few seconds; a flood of them is one
  write). When the store is unavailable the writer waits and retries; when the queue is
  full, new changes are dropped and counted.

A flood of DISCOVERs from random MACs must not become a stream of new records: a change for a
MAC the registry does not know yet takes a token from one budget shared by all clients
(``new_macs_per_second``, twice that in a burst; ``limits.new_macs_per_second``); without a
token it is dropped and counted (``limited``). Repeats of a MAC still queued are merged and
take no token; MACs the registry knows (read once when the writer starts, then every node
written from here) are never limited, so known machines keep booting and being recorded
through a flood. A real new machine that lost its sighting is still answered by ProxyDHCP
and recorded when it fetches its iPXE script over HTTP.

:meth:`admit` decides whether a change enters the queue; :meth:`_write` is the one place that
writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from . import metrics
from .errors import PxeError, StoreUnavailable
from .model import MAC, Machine, Node, new_event_id
from .ratelimit import TokenBucket
from .registry import Change, Registry

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
MAX_REMEMBERED = 100_000
RETRY_MIN, RETRY_MAX = 0.5, 10.0
NEW_MACS_PER_SECOND = 20.0
LIMIT_LOG_WINDOW = 60.0


@dataclass
class _Pending:
    mac: MAC
    change: Change
    key: tuple[MAC, str] | None
    merged: int = 0


class Sightings:
    def __init__(
        self,
        registry: Registry,
        *,
        max_pending: int = MAX_PENDING,
        retry_min: float = RETRY_MIN,
        new_macs_per_second: float = NEW_MACS_PER_SECOND,
    ) -> None:
        self.registry = registry
        self.max_pending = max_pending
        self.retry_min = retry_min  # first wait after the store did not answer; doubles
        self.new_macs = TokenBucket(new_macs_per_second, max(1.0, 2 * new_macs_per_second))
        self.counters = {"queued": 0, "merged": 0, "dropped": 0, "limited": 0, "written": 0,
                         "failed": 0}  # fmt: skip
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
        """Why a new change may not enter the queue (the lock is held): ``dropped`` when the
        queue is full, ``limited`` when it is about a MAC the registry does not know and the
        budget for new MACs is spent; None to queue it."""
        if len(self._queue) >= self.max_pending:
            return "dropped"
        if mac not in self._known and not self.new_macs.take():
            return "limited"
        return None

    def _note_limited(self) -> None:
        """One log line a minute while sightings of new MACs are being dropped (lock held)."""
        now = time.monotonic()
        if now - self._limited_logged >= LIMIT_LOG_WINDOW:
            log.warning(
                "sightings of MACs not in the registry arrive faster than "
                "limits.new_macs_per_second (%.0f/s): %d dropped so far (a flood of "
                "DISCOVERs from random MACs?); known machines are still recorded",
                self.new_macs.rate, self.counters["limited"],
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
            refused = self.admit(mac, change)
            if refused is not None:
                self.counters[refused] += 1
                if refused == "limited":
                    metrics.limited.labels(what="new-mac").inc()
                    self._note_limited()
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
        left = self.pending()
        if left:
            log.warning("%d sightings were not written to the registry before stopping", left)

    def flush(self, timeout: float) -> bool:
        """Wait until the queue is empty (True) or ``timeout`` seconds pass (False)."""
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
            macs = [node.mac for node in self.registry.all()[:MAX_REMEMBERED]]
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
                    self._changed.wait()
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
