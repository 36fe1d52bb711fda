"""The transfer loops the TFTP server hands accepted requests to, and their supervision.

A :class:`~pxeserver.tftp.transfers.TransferLoop` runs in a thread of this process
(``workers=0``: tests, small sites) or in up to ``workers`` spawned processes, each with
its own epoll loop (:class:`Worker`; the daemon chooses, docs/BENCHMARKS.md says why).
One process runs from the start; another starts when every running one is busy, and
stops after ``idle_retire`` seconds without work. A process that dies is replaced (its
transfers are lost; their clients retry); one that keeps dying at start (an interpreter
the dropped user may not read, say) is replaced by a thread, so TFTP keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any

from .files import CACHE_TOTAL_MAX
from .transfers import Cancel, Heard, Job, Outcome, TransferLoop, worker_main

log = logging.getLogger(__name__)

QUICK_DEATH = 10.0  # a transfer process that dies this soon after starting died "at start"
MAX_QUICK_DEATHS = 3
# Transfer processes beyond the first start when every running one is busy and stop after
# this long without a transfer: an idle server keeps one (docs/BENCHMARKS.md, "Resource use").
IDLE_RETIRE = 60.0


class Worker:
    """A transfer loop in a spawned process, fed jobs through a pipe."""

    def __init__(self, index: int, params: dict[str, Any], init: Callable[[], None] | None,
                 on_done: Callable[[Outcome | Heard], None],
                 on_exit: Callable[[int], None]) -> None:  # fmt: skip
        ctx = multiprocessing.get_context("spawn")
        self.jobs_r, self.jobs_w = ctx.Pipe(duplex=False)
        self.done_r, self.done_w = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=worker_main, args=(self.jobs_r, self.done_w, params, init),
            name=f"pxeserver-tftp-{index}", daemon=True,
        )  # fmt: skip
        self.process.start()
        self.jobs_r.close()
        self.done_w.close()
        self.index = index
        self.started = time.monotonic()
        self.last_used = self.started
        self.active = 0
        self.stopping = False
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, args=(on_done, on_exit), daemon=True,
                                       name=f"tftp-worker-{index}")  # fmt: skip
        self.reader.start()

    def _read(self, on_done: Callable[[Outcome | Heard], None],
              on_exit: Callable[[int], None]) -> None:  # fmt: skip
        while True:
            try:
                outcome = self.done_r.recv()
            except (EOFError, OSError):
                break
            on_done(outcome)
        if not self.stopping:
            on_exit(self.index)

    def submit(self, job: Job | Cancel | None) -> None:
        with self.lock:
            self.jobs_w.send(job)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.submit(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()  # it ignores SIGTERM (worker_main says why)
            self.process.join(timeout=5)
        self.jobs_w.close()
        if threading.current_thread() is not self.reader:
            self.reader.join(timeout=5)
        self.done_r.close()


Loop = TransferLoop | Worker | None  # None: a worker slot with no process now


class TransferPool:
    """The transfer loops of one TFTP server, by index. Methods named ``…_locked`` are
    called with ``lock`` held: the server's, since its transfer slots name a loop by index
    and change together with the loops."""

    def __init__(
        self,
        params: dict[str, Any],
        on_done: Callable[[Outcome | Heard], None],
        on_lost: Callable[[int], int],
        lock: threading.Lock,
        *,
        workers: int = 0,
        init: Callable[[], None] | None = None,
        idle_retire: float = IDLE_RETIRE,
    ) -> None:
        self.params = params  # TransferLoop's settings
        self.on_done = on_done  # a transfer ended, or its client answered first
        self.on_lost = on_lost  # (lock held) the transfers of loop i are gone; how many
        self.lock = lock
        self.workers = workers
        self.init = init  # run first in each spawned process (logging)
        self.idle_retire = idle_retire
        self.loops: list[Loop] = []
        self._worker_params: dict[str, Any] = {}
        self._quick_deaths = 0
        self._retired_check = 0.0
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        if self.workers > 0:
            cache_max = CACHE_TOTAL_MAX // self.workers
            self._worker_params = {**self.params, "cache_total": cache_max}
            self.loops = [self._spawn(0), *([None] * (self.workers - 1))]
        else:
            self.loops = [TransferLoop(self.on_done, **self.params).start()]

    def stop(self) -> None:
        self._stopping = True
        for loop in self.loops:
            if loop is not None:
                loop.stop()
        self.loops = []

    def choose_locked(self) -> int:
        """The least busy transfer loop; a new process in a free slot if all are busy."""
        running = [i for i, loop in enumerate(self.loops) if loop is not None]
        index = min(running, key=lambda i: _load(self.loops[i]))
        if _load(self.loops[index]) > 0:
            free = next((i for i, loop in enumerate(self.loops) if loop is None), None)
            if free is not None:
                self.loops[free] = self._spawn(free)
                return free
        return index

    def began_locked(self, index: int) -> None:
        loop = self.loops[index]
        if isinstance(loop, Worker):
            loop.active += 1
            loop.last_used = time.monotonic()

    def ended_locked(self, index: int) -> None:
        loop = self.loops[index] if index < len(self.loops) else None
        if isinstance(loop, Worker):
            loop.active -= 1
            loop.last_used = time.monotonic()

    def submit(self, index: int, job: Job) -> None:
        """Hand ``job`` to loop ``index``; OSError if its process is gone (another starts)."""
        loop = self.loops[index]
        assert loop is not None
        loop.submit(job)

    def cancel(self, peer: tuple[str, int], index: int) -> None:
        loop = self.loops[index] if index < len(self.loops) else None
        if loop is None:
            return
        with contextlib.suppress(OSError):  # a worker that is gone: its slots go with it
            loop.submit(Cancel(peer, "cancelled to make room: the client had not answered"))

    def retire_idle(self) -> None:
        """Stop transfer processes (beyond the first) that had nothing to do for a while."""
        now = time.monotonic()
        if now - self._retired_check < 1.0:
            return
        self._retired_check = now
        retired = []
        with self.lock:
            for i, loop in enumerate(self.loops):
                if (i > 0 and isinstance(loop, Worker) and loop.active == 0
                        and now - loop.last_used > self.idle_retire):  # fmt: skip
                    loop.stopping = True
                    self.loops[i] = None
                    retired.append(loop)
        for loop in retired:
            log.debug("TFTP: transfer process %d idle; stopped", loop.index)
            threading.Thread(target=loop.stop, name="tftp-retire", daemon=True).start()

    def _spawn(self, index: int) -> Worker:
        return Worker(index, self._worker_params, self.init, self.on_done, self._worker_gone)

    def _worker_gone(self, index: int) -> None:
        """A transfer process died (a bug or a kill): its transfers are lost, start another."""
        if self._stopping:
            return
        with self.lock:
            lost = self.on_lost(index)
            old = self.loops[index] if index < len(self.loops) else None
            if not isinstance(old, Worker):
                return  # retired meanwhile (stopping is set before a retired one stops)
            old.stopping = True
            old.process.join(timeout=5)
            quick = time.monotonic() - old.started < QUICK_DEATH
            self._quick_deaths = self._quick_deaths + 1 if quick else 0
            # A process that cannot even start (an interpreter the dropped user may not
            # read, say) would be respawned forever: serve from a thread instead.
            fallback = self._quick_deaths >= MAX_QUICK_DEATHS
            if fallback:
                self.loops[index] = TransferLoop(self.on_done, **self.params).start()
            else:
                self.loops[index] = self._spawn(index)
        if fallback:
            log.error("TFTP: transfer processes keep exiting at start (exit code %s); serving "
                      "transfers in a thread of the main process instead",
                      old.process.exitcode)  # fmt: skip
        else:
            log.error("TFTP: transfer process %d (pid %s) exited with %s; %d transfers lost "
                      "(their clients will retry); started a new one", index, old.process.pid,
                      old.process.exitcode, lost)  # fmt: skip
        old.stop()


def _load(loop: Loop) -> int:
    if loop is None:
        return 1 << 30
    return loop.active if isinstance(loop, Worker) else len(loop.transfers)
