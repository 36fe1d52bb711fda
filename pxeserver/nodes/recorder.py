"""The recorder: a thread of the main process that writes the boot steps the HTTP workers
answered from memory, behind the answers, in batches.

Every ``INTERVAL`` it reads what the workers noted in their step logs
(:mod:`pxeserver.nodes.steps`), orders it by the time each step was answered, writes it
with one store transaction per ``MAX_BATCH`` nodes (:mod:`pxeserver.nodes.batches`: each
node's steps folded into one record write; with the etcd store, what etcd does not take
goes to the journal, see :mod:`pxeserver.nodes.resilient`), and only then marks it done in
the logs. A read takes at most ``MAX_STEPS_PER_NODE`` steps of one node; when it left
more already noted (one machine asked for again and again, faster than that per read),
the recorder reads again at once rather than after the interval, until it has caught up.
So a step is in the store (or the journal) one read after it was answered: within
``INTERVAL`` (``BUSY_INTERVAL`` while hundreds of steps come per read) plus the time of
the writes, unless the store is down (then it stays in the logs and is written when the
store answers again; the reads wait longer and longer, up to ``RETRY_MAX``) or the
workers note steps faster than the store takes them. ``pxeserver_step_delay_seconds``
shows the time it takes.

At start, before any HTTP worker runs, :meth:`Recorder.drain` writes what a server
killed earlier had noted but not written; at stop, what the workers noted last.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from .. import metrics
from ..errors import StoreUnavailable
from ..model import MAC, Versioned
from .batches import BatchResult, Step
from .steps import StepReader

log = logging.getLogger(__name__)

INTERVAL = 0.05
# After a read of at least BUSY steps, the next read waits BUSY_INTERVAL: a node asked
# for again and again (a benchmark, a machine in a retry loop) is then written once for
# many steps, and the main process spends less of its time writing.
BUSY, BUSY_INTERVAL = 256, 0.25
RETRY_MAX = 5.0
# Nodes as last written, to start the next write of each from (no read): the most recent
# this many, none older than KEEP_S (an idle server keeps none of them in memory).
KEEP = 4096
KEEP_S = 30.0

Write = Callable[[Sequence[Step], Mapping[MAC, Versioned]], BatchResult]


class Recorder:
    def __init__(self, reader: StepReader, write: Write, *, interval: float = INTERVAL) -> None:
        self.reader = reader
        self.write = write
        self.interval = interval
        self._known: OrderedDict[MAC, tuple[Versioned, float]] = OrderedDict()
        self._lock = threading.Lock()  # one flush at a time (the thread, drain, tests)
        self._stopping = threading.Event()
        self._wait = self._stopping.wait  # True once stopping (tests count the waits)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, then write what is left (the workers have stopped by now)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if not self.drain(timeout):
            log.warning("%d bytes of boot steps are not written yet; written at the next "
                        "start", self.reader.pending())  # fmt: skip
        self.reader.close()

    def _run(self) -> None:
        delay = self.interval
        while not self._wait(delay):
            try:
                delay = self._after(self.flush())
            except StoreUnavailable as exc:
                delay = min(max(delay, self.interval) * 2, RETRY_MAX)
                log.warning("boot steps wait for the store (next try in %.1f s): %s", delay, exc)
            except Exception:
                log.exception("writing boot steps failed; trying again")
                delay = RETRY_MAX

    def _after(self, read: int) -> float:
        """How long to wait after a flush that wrote ``read`` steps: nothing if the read
        left steps already noted (:attr:`StepReader.capped`: one node asked for faster
        than ``MAX_STEPS_PER_NODE`` per read; waiting would let its backlog grow for
        ever), ``BUSY_INTERVAL`` after a busy read, else ``interval``. Each read at once
        writes (or journals) steps and marks them done, so it ends when the backlog does;
        a store that does not take them raises instead, and the waits grow."""
        if self.reader.capped:
            return 0.0
        return BUSY_INTERVAL if read >= BUSY else self.interval

    def drain(self, timeout: float = 10.0) -> bool:
        """Write everything noted so far; False if the store did not take it in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.flush():
                    return True
            except StoreUnavailable as exc:
                log.warning("boot steps wait for the store: %s", exc)
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        return False

    def flush(self) -> int:
        """One round: read, write, mark done. How many steps were read (0: nothing new).
        Raises StoreUnavailable, leaving them to be read again, if the store did not
        take them all."""
        with self._lock:
            steps = self.reader.read()
            if not steps:
                self.reader.mark_done()  # finished logs go
                return 0
            steps.sort(key=lambda step: step[1].at or 0.0)  # the workers' logs interleaved
            result = self.write(steps, self._fresh())
            if result.failed:
                self.reader.rewind()
                raise StoreUnavailable(f"{len(result.failed)} boot steps were not written")
            self.reader.mark_done()
            self._account(result, steps[0][1].at)
            return len(steps)

    def _fresh(self) -> dict[MAC, Versioned]:
        cutoff = time.monotonic() - KEEP_S
        while self._known and next(iter(self._known.values()))[1] < cutoff:
            self._known.popitem(last=False)
        return {mac: v for mac, (v, _) in self._known.items()}

    def _account(self, result: BatchResult, oldest: float | None) -> None:
        now, wall = time.monotonic(), time.time()
        for mac, versioned in result.versions.items():
            self._known.pop(mac, None)
            self._known[mac] = (versioned, now)
        while len(self._known) > KEEP:
            self._known.popitem(last=False)
        for mac, change, why in result.dropped:
            log.warning("%s: %s not recorded: %s", mac, change.kind, why)
        metrics.steps_recorded.labels(outcome="dropped").inc(len(result.dropped))
        metrics.steps_recorded.labels(outcome="written").inc(len(result.written))
        metrics.steps_recorded.labels(outcome="journalled").inc(len(result.journalled))
        if oldest is not None:
            metrics.step_delay_seconds.observe(max(0.0, wall - oldest))
