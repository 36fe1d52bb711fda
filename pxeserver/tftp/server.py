"""The TFTP service: read-only, confined to its root, per-machine files from the boot policy.

Why an engine of our own and not tftpy (the design card's choice): tftpy 0.8.7 dies on one
request with ``blksize=abc``, accepts uploads, answers options nobody asked for, ignores
upper-case option names, grants blksize 65535, has neither windowsize nor the ``timeout``
option, and measured about 0.6× tftpd-hpa. Those sit in its state machine and packet
classes, not at an extension point: hardening it would have meant replacing most of it.
Measured against tftpd-hpa, this engine's CPU per MB is at parity; what one Python thread
could not match was 32 transfers at once (0.45×), because it can use one core where
tftpd-hpa's process per transfer uses all. So the work is split (docs/BENCHMARKS.md):

- :class:`TftpServer` (this module) owns the listening socket: it parses requests, refuses
  what must be refused (writes, names outside the root, malformed packets), renders the
  per-machine files through the boot policy in a small thread pool (never on a packet
  loop), and hands each accepted request to a transfer loop;
- :class:`pxeserver.tftp.transfers.TransferLoop` runs transfers, in a thread of this process
  (``workers=0``: tests, small sites) or in up to ``workers`` spawned processes, each with
  its own epoll loop; the daemon chooses. One process runs from the start; another starts
  when every running one is busy, and stops after ``idle_retire`` seconds without work.

Limits (``limits.tftp_*`` in the settings; docs/RELIABILITY.md): at most
``max_per_client`` transfers at once from one address and ``max_transfers`` in all; at most
``client_rate`` new requests a second from one address (twice that in a burst), the rest
dropped without an answer. When all ``max_transfers`` are held, a new request takes the place
of the oldest transfer whose client has not answered anything for a whole timeout (a
stalled or spoofed client), so stalled clients cannot lock real machines out.

Every finished transfer is logged with the MAC when ProxyDHCP saw the client's address, and
handed to the boot policy as a TFTP event on that node. Refusals get an error packet
("file not found" / "access violation") and one log line per client, name and reason a
minute. Options follow :func:`pxeserver.tftp.packets.negotiate`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import re
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import metrics
from ..errors import NotFound, PxeError, StoreUnavailable
from ..host.netif import enlarge_receive_buffer
from ..model import MAC, Machine
from ..ratelimit import KeyedBuckets, LogBudget, left_out
from . import packets as tp
from .files import CACHE_TOTAL_MAX, Refused, locate
from .transfers import UNANSWERED_RETRIES, Cancel, Heard, Job, Outcome, TransferLoop, worker_main

log = logging.getLogger(__name__)

IP_PKTINFO = 8  # Linux <netinet/in.h>; Python 3.11's socket module does not export it
_PKTINFO = struct.Struct("=I4s4s")
_PXELINUX_MAC = re.compile(r"pxelinux\.cfg/01-([0-9a-fA-F]{2}(?:-[0-9a-fA-F]{2}){5})")
REFUSAL_LOG_WINDOW = 60.0
QUICK_DEATH = 10.0  # a transfer process that dies this soon after starting died "at start"
# Transfer processes beyond the first start when every running one is busy and stop after
# this long without a transfer: an idle server keeps one (docs/BENCHMARKS.md, "Resource use").
IDLE_RETIRE = 60.0
MAX_QUICK_DEATHS = 3
# pxeserver_tftp_errors_total{reason} for the error packets sent
_ERROR_REASONS = {tp.FILE_NOT_FOUND: "not-found", tp.ACCESS_VIOLATION: "access-violation",
                  tp.ILLEGAL_OPERATION: "malformed", tp.NOT_DEFINED: "busy-or-store"}  # fmt: skip


# Defaults of the limits (settings: limits.tftp_sessions, …_per_client, tftp_requests_…).
MAX_TRANSFERS = 1024
MAX_PER_CLIENT = 4
CLIENT_RATE = 10.0


@dataclass
class _Slot:
    """A transfer the server counts: its loop (-1 while rendering), when it began, whether
    its client has answered, whether the server asked its loop to cancel it."""

    index: int
    started: float
    heard: bool = False
    cancelling: bool = False


class TftpBoot(Protocol):
    """What the TFTP service asks the boot policy (:class:`pxeserver.boot.BootService`)."""

    def chain_script(self, base: str) -> str: ...

    def pxelinux_config(self, machine: Machine, base: str) -> str: ...

    def machine_at(self, ip: str) -> Machine | None: ...

    def note_transfer(self, ip: str, detail: str) -> None: ...


class _Worker:
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
            self.process.terminate()
            self.process.join(timeout=5)
        self.jobs_w.close()
        if threading.current_thread() is not self.reader:
            self.reader.join(timeout=5)
        self.done_r.close()


class TftpServer:
    """Serves ``root`` (and ``assets/`` from ``assets_dir``) over TFTP. ``bind()``, ``start()``,
    ``stop()``; ``port`` is the bound port (tests bind port 0)."""

    def __init__(
        self,
        root: Path,
        *,
        address: str = "0.0.0.0",
        port: int = 69,
        assets_dir: Path | None = None,
        boot: TftpBoot | None = None,
        base_url: Callable[[str], str] | None = None,
        timeout: float = 1.0,
        retries: int = 5,
        max_transfers: int = MAX_TRANSFERS,
        max_per_client: int = MAX_PER_CLIENT,
        client_rate: float = CLIENT_RATE,
        unanswered_retries: int = UNANSWERED_RETRIES,
        max_windowsize: int = 64,
        workers: int = 0,
        worker_init: Callable[[], None] | None = None,
        idle_retire: float = IDLE_RETIRE,
    ) -> None:
        self.root = Path(root)
        self.assets_dir = Path(assets_dir) if assets_dir is not None else None
        self.address = address
        self.port = port
        self.boot = boot
        self.base_url = base_url or (lambda host: f"http://{host}:8080")
        self.max_transfers = max_transfers
        self.max_per_client = max_per_client
        self.timeout = timeout
        self._rate = KeyedBuckets(client_rate, max(1.0, 2 * client_rate))
        self.workers = workers
        self.worker_init = worker_init
        self.idle_retire = idle_retire
        self.params: dict[str, Any] = {
            "timeout": timeout,
            "retries": retries,
            "unanswered_retries": unanswered_retries,
            "max_windowsize": max_windowsize,
        }
        self.counters = {"requests": 0, "completed": 0, "failed": 0, "refused": 0, "bad": 0,
                         "limited": 0, "cancelled": 0}  # fmt: skip
        self.sock: socket.socket | None = None
        self._active: dict[tuple[str, int], _Slot] = {}
        self._per_ip: dict[str, int] = {}
        self._cancelling = 0  # slots whose loop was asked to cancel them
        self._lock = threading.Lock()
        # Transfer loops by index; None: a worker slot with no process now (started on demand).
        self._loops: list[TransferLoop | _Worker | None] = []
        self._retired_check = 0.0
        self._refusals: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._log_budget = LogBudget()  # refusal lines a second, whatever their kind
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._worker_params: dict[str, Any] = {}
        self._quick_deaths = 0

    # -- life cycle ------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind the listening socket (the caller may drop privileges after this)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        enlarge_receive_buffer(sock)  # a rack's read requests arrive together
        try:
            sock.bind((self.address, self.port))
        except OSError:
            sock.close()
            raise
        sock.settimeout(0.5)
        self.sock = sock
        self.port = sock.getsockname()[1]

    def start(self) -> TftpServer:
        if self.sock is None:
            self.bind()
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="tftp-render")
        if self.workers > 0:
            cache_max = CACHE_TOTAL_MAX // self.workers
            params = {**self.params, "cache_total": cache_max}
            self._worker_params = params
            self._loops = [self._spawn(0), *([None] * (self.workers - 1))]
        else:
            self._loops = [TransferLoop(self._on_done, **self.params).start()]
        self._thread = threading.Thread(target=self._listen, name="tftp", daemon=True)
        self._thread.start()
        where = f"{self.workers} worker processes" if self.workers else "a thread"
        log.info("TFTP on %s:%d serving %s (transfers in %s)", self.address, self.port,
                 self.root, where)  # fmt: skip
        return self

    def _spawn(self, index: int) -> _Worker:
        return _Worker(index, self._worker_params, self.worker_init, self._on_done,
                       self._worker_gone)  # fmt: skip

    def _worker_gone(self, index: int) -> None:
        """A transfer process died (a bug or a kill): its transfers are lost, start another."""
        if self._stopping.is_set():
            return
        with self._lock:
            lost = [peer for peer, slot in self._active.items() if slot.index == index]
            for peer in lost:
                self._drop_locked(peer)
            old = self._loops[index]
            if not isinstance(old, _Worker):
                return  # retired meanwhile (stopping is set before a retired one stops)
            old.stopping = True
            old.process.join(timeout=5)
            quick = time.monotonic() - old.started < QUICK_DEATH
            self._quick_deaths = self._quick_deaths + 1 if quick else 0
            # A process that cannot even start (an interpreter the dropped user may not
            # read, say) would be respawned forever: serve from a thread instead.
            fallback = self._quick_deaths >= MAX_QUICK_DEATHS
            if fallback:
                self._loops[index] = TransferLoop(self._on_done, **self.params).start()
            else:
                self._loops[index] = self._spawn(index)
        if fallback:
            log.error(
                "TFTP: transfer processes keep exiting at start (exit code %s); serving "
                "transfers in a thread of the main process instead",
                old.process.exitcode,
            )
        else:
            log.error("TFTP: transfer process %d (pid %s) exited with %s; %d transfers lost "
                      "(their clients will retry); started a new one", index, old.process.pid,
                      old.process.exitcode, len(lost))  # fmt: skip
        old.stop()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for loop in self._loops:
            if loop is not None:
                loop.stop()
        self._loops = []
        self.close()

    def close(self) -> None:
        """Release the listening socket (also of a server bound but never started)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- requests --------------------------------------------------------------------------

    def _listen(self) -> None:
        assert self.sock is not None
        while not self._stopping.is_set():
            try:
                packet, anc, _, peer = self.sock.recvmsg(tp.MAX_REQUEST + 1, socket.CMSG_SPACE(12))
            except (TimeoutError, InterruptedError):
                self._retire_idle()
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                log.debug("TFTP: receive failed: %s", exc)
                continue
            try:
                self._on_request(packet, self._local_address(anc), peer)
            except Exception:  # a bug, not a packet: say so and keep serving
                log.exception("TFTP: unexpected error on a request from %s", peer[0])
            self._retire_idle()

    def _retire_idle(self) -> None:
        """Stop transfer processes (beyond the first) that had nothing to do for a while."""
        now = time.monotonic()
        if now - self._retired_check < 1.0:
            return
        self._retired_check = now
        retired = []
        with self._lock:
            for i, loop in enumerate(self._loops):
                if (i > 0 and isinstance(loop, _Worker) and loop.active == 0
                        and now - loop.last_used > self.idle_retire):  # fmt: skip
                    loop.stopping = True
                    self._loops[i] = None
                    retired.append(loop)
        for loop in retired:
            log.debug("TFTP: transfer process %d idle; stopped", loop.index)
            threading.Thread(target=loop.stop, name="tftp-retire", daemon=True).start()

    @staticmethod
    def _local_address(ancillary: list[tuple[int, int, bytes]]) -> str:
        for level, kind, data in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
                _, spec_dst, _ = _PKTINFO.unpack_from(data)
                return socket.inet_ntoa(spec_dst)
        return "0.0.0.0"

    def _on_request(self, packet: bytes, local: str, peer: tuple[str, int]) -> None:
        self.counters["requests"] += 1
        if not self._rate.take(peer[0]):
            # Dropped without an answer: a flood (or forged requests) gets nothing back.
            self.counters["limited"] += 1
            metrics.limited.labels(what="tftp-request").inc()
            self._log_refusal(peer[0], "-", "more new requests a second than "
                              "limits.tftp_requests_per_client", "nothing: dropped")  # fmt: skip
            return
        try:
            req = tp.parse(packet)
        except tp.PacketError as exc:
            self.counters["bad"] += 1
            self._refuse(peer, tp.ILLEGAL_OPERATION, "malformed request", str(exc), "?")
            return
        if not isinstance(req, tp.Request):
            self.counters["bad"] += 1
            return  # DATA/ACK/ERROR to the listening port: no session of ours
        if req.opcode == tp.WRQ:
            self._refuse(peer, tp.ACCESS_VIOLATION,
                         "pxeserver is read-only: writing files is not allowed",
                         "write request", req.filename)  # fmt: skip
            return
        if req.mode == "mail":
            self._refuse(peer, tp.ILLEGAL_OPERATION, "mail mode is not supported", "mail mode",
                         req.filename)  # fmt: skip
            return
        with self._lock:
            if peer in self._active:
                return  # the client repeated its request before our first answer reached it
            busy, victim = self._admit_locked(peer)
        if victim is not None:
            self._cancel(*victim)
        if busy is not None:
            metrics.limited.labels(what="tftp-session").inc()
            self._refuse(peer, tp.NOT_DEFINED, busy, busy, req.filename)
            return
        job = Job(peer, local, req.filename, req.mode, dict(req.options))
        render = self._dynamic(req.filename, peer[0], local)
        if render is not None:
            assert self._pool is not None
            self._pool.submit(self._render, job, render)
            return
        try:
            path = locate(self.root, self.assets_dir, req.filename)
            if not os.path.isfile(path):
                raise Refused(tp.FILE_NOT_FOUND, "file not found", "no such file")
        except Refused as exc:
            self._release(peer)
            self._refuse(peer, exc.code, exc.message, exc.reason, req.filename)
            return
        self._dispatch(Job(peer, local, req.filename, req.mode, dict(req.options), path=path))

    # -- limits ------------------------------------------------------------------------------

    def _admit_locked(
        self, peer: tuple[str, int]
    ) -> tuple[str | None, tuple[tuple[str, int], int] | None]:
        """Count a new transfer for ``peer`` (the lock is held). Returns why it is refused
        (None: admitted) and the silent transfer to cancel to make room, if any."""
        if self._per_ip.get(peer[0], 0) >= self.max_per_client:
            return "too many transfers from your address at once, try again", None
        victim = None
        if len(self._active) - self._cancelling >= self.max_transfers:
            victim = self._silent_victim_locked()
            if victim is None:
                return "server busy, try again", None
        self._add_locked(peer, -1)
        return None, victim

    def _silent_victim_locked(self) -> tuple[tuple[str, int], int] | None:
        """The oldest transfer whose client has not answered for a whole timeout, marked as
        being cancelled; None if every transfer's client has answered or is too new."""
        limit = time.monotonic() - self.timeout
        best: tuple[str, int] | None = None
        best_slot: _Slot | None = None
        for peer, slot in self._active.items():
            if slot.heard or slot.cancelling or slot.index < 0 or slot.started > limit:
                continue
            if best_slot is None or slot.started < best_slot.started:
                best, best_slot = peer, slot
        if best is None or best_slot is None:
            return None
        best_slot.cancelling = True
        self._cancelling += 1
        return best, best_slot.index

    def _cancel(self, peer: tuple[str, int], index: int) -> None:
        loop = self._loops[index] if index < len(self._loops) else None
        if loop is None:
            return
        with contextlib.suppress(OSError):  # a worker that is gone: its slots go with it
            loop.submit(Cancel(peer, "cancelled to make room: the client had not answered"))

    def _add_locked(self, peer: tuple[str, int], index: int) -> _Slot:
        slot = _Slot(index, time.monotonic())
        self._active[peer] = slot
        self._per_ip[peer[0]] = self._per_ip.get(peer[0], 0) + 1
        return slot

    def _drop_locked(self, peer: tuple[str, int]) -> _Slot | None:
        slot = self._active.pop(peer, None)
        if slot is None:
            return None
        if slot.cancelling:
            self._cancelling -= 1
        left = self._per_ip.get(peer[0], 1) - 1
        if left > 0:
            self._per_ip[peer[0]] = left
        else:
            self._per_ip.pop(peer[0], None)
        return slot

    def _dispatch(self, job: Job) -> None:
        with self._lock:
            index = self._choose_loop()
            slot = self._active.get(job.peer) or self._add_locked(job.peer, index)
            slot.index = index
            loop = self._loops[index]
            assert loop is not None
            if isinstance(loop, _Worker):
                loop.active += 1
                loop.last_used = time.monotonic()
        try:
            loop.submit(job)
        except OSError as exc:  # the worker is gone; its reader thread starts another
            log.warning("TFTP: transfer process %d is gone (%s); %s refused", index, exc,
                        job.name)  # fmt: skip
            self._release(job.peer)
            self._refuse(job.peer, tp.NOT_DEFINED, "server busy, try again",
                         "transfer process gone", job.name)  # fmt: skip

    def _choose_loop(self) -> int:
        """The least busy transfer loop; a new process in a free slot if all are busy.
        Called with the lock held."""
        running = [i for i, loop in enumerate(self._loops) if loop is not None]
        index = min(running, key=lambda i: _load(self._loops[i]))
        if _load(self._loops[index]) > 0:
            free = next((i for i, loop in enumerate(self._loops) if loop is None), None)
            if free is not None:
                self._loops[free] = self._spawn(free)
                return free
        return index

    def _release(self, peer: tuple[str, int]) -> None:
        with self._lock:
            slot = self._drop_locked(peer)
            if slot is not None and slot.index >= 0:
                loop = self._loops[slot.index] if slot.index < len(self._loops) else None
                if isinstance(loop, _Worker):
                    loop.active -= 1
                    loop.last_used = time.monotonic()

    def _refuse(self, peer: tuple[str, int], code: int, message: str, reason: str,
                name: str) -> None:  # fmt: skip
        self.counters["refused"] += 1
        metrics.tftp_errors.labels(reason=_ERROR_REASONS.get(code, "other")).inc()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.sendto(tp.error(code, message), peer)
        # A missing file is routine (PXELINUX probes several config names before its own);
        # a name outside the root or a write is not.
        level = logging.INFO if code == tp.FILE_NOT_FOUND else logging.WARNING
        self._log_refusal(peer[0], name, reason, message, level)

    def _log_refusal(
        self, ip: str, name: str, reason: str, told: str, level: int = logging.WARNING
    ) -> None:
        key = (ip, name, reason)
        now = time.monotonic()
        with self._lock:
            last = self._refusals.get(key)
            self._refusals[key] = now
            self._refusals.move_to_end(key)
            while len(self._refusals) > 1024:
                self._refusals.popitem(last=False)
        if last is None or now - last >= REFUSAL_LOG_WINDOW:
            allowed, skipped = self._log_budget.allow()
            if allowed:
                log.log(level, "TFTP %s from %s: refused %r: %s (told: %s)%s", self._mac_of(ip),
                        ip, name[:80], reason, told, left_out(skipped))  # fmt: skip

    # -- per-machine files -----------------------------------------------------------------

    def _dynamic(self, name: str, ip: str, local: str) -> Callable[[], str] | None:
        """A function that renders ``name``, if it is one of the per-machine files."""
        boot = self.boot
        if boot is None:
            return None
        base = self.base_url(local)
        if name == "boot.ipxe":
            return lambda: boot.chain_script(base)
        m = _PXELINUX_MAC.fullmatch(name)
        if m is None:
            return None
        mac = MAC.parse(m.group(1))

        def render() -> str:
            seen = boot.machine_at(ip)
            facts = seen if seen is not None and seen.mac == mac else Machine(mac)
            machine = Machine(mac, facts.uuid, facts.arch, facts.platform, ip)
            return boot.pxelinux_config(machine, base)

        return render

    def _render(self, job: Job, render: Callable[[], str]) -> None:
        try:
            data = render().encode()
        except StoreUnavailable as exc:
            refusal = Refused(tp.NOT_DEFINED, "the node store is unavailable, try again", str(exc))
        except NotFound as exc:
            refusal = Refused(tp.FILE_NOT_FOUND, "file not found", str(exc))
        except PxeError as exc:
            refusal = Refused(tp.NOT_DEFINED, "pxeserver could not render this file", str(exc))
        except Exception as exc:  # a bug in rendering must not lose the request silently
            log.exception("TFTP: rendering %s failed", job.name)
            refusal = Refused(tp.NOT_DEFINED, "internal error", repr(exc))
        else:
            self._dispatch(Job(job.peer, job.local, job.name, job.mode, job.options, data=data))
            return
        self._release(job.peer)
        self._refuse(job.peer, refusal.code, refusal.message, refusal.reason, job.name)

    # -- outcomes --------------------------------------------------------------------------

    def _on_done(self, o: Outcome | Heard) -> None:
        """A transfer ended, or its client answered for the first time (called from a loop
        thread or a worker's reader thread)."""
        if isinstance(o, Heard):
            with self._lock:
                slot = self._active.get(o.peer)
                if slot is not None:
                    slot.heard = True
            return
        self._release(o.peer)
        ip = o.peer[0]
        if o.cancelled:
            self.counters["cancelled"] += 1
            metrics.tftp_transfers.labels(result="cancelled").inc()
            self._log_refusal(ip, o.name, o.failure or "cancelled", "nothing more", logging.INFO)
            return
        if o.refused:
            self.counters["refused"] += 1
            metrics.tftp_errors.labels(reason="refused").inc()
            self._log_refusal(ip, o.name, o.failure or "refused", "error packet")
            return
        if o.aborted:
            metrics.tftp_transfers.labels(result="aborted").inc()
            # Firmware (EDK2) asks for tsize and then aborts on purpose: normal, not a failure.
            log.debug("TFTP %s from %s: %s: %s", self._mac_of(ip), ip, o.name, o.failure)
            return
        if o.failure is None:
            self.counters["completed"] += 1
            metrics.tftp_transfers.labels(result="ok").inc()
            metrics.tftp_bytes.inc(o.size)
            detail = (f"{o.name} {o.size} bytes in {o.seconds:.2f} s "
                      f"(blksize {o.blksize}, window {o.window})")  # fmt: skip
            log.info("TFTP %s from %s: %s", self._mac_of(ip), ip, detail)
        else:
            self.counters["failed"] += 1
            metrics.tftp_transfers.labels(result="failed").inc()
            metrics.tftp_errors.labels(
                reason="timeout" if "retries" in o.failure else "other"
            ).inc()
            detail = f"{o.name} failed: {o.failure}"
            log.warning("TFTP %s from %s: %s", self._mac_of(ip), ip, detail)
        if self.boot is not None:
            try:
                self.boot.note_transfer(ip, detail)
            except Exception:  # recording must never stop serving
                log.exception("TFTP: recording the transfer of %s failed", o.name)

    def _mac_of(self, ip: str) -> str:
        if self.boot is None:
            return "-"
        seen = self.boot.machine_at(ip)
        return str(seen.mac) if seen is not None else "-"

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._active)


def _load(loop: TransferLoop | _Worker | None) -> int:
    if loop is None:
        return 1 << 30
    return loop.active if isinstance(loop, _Worker) else len(loop.transfers)
