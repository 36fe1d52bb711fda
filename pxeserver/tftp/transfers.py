"""TFTP transfers in flight: one epoll loop per thread or worker process. No policy here.

:class:`TransferLoop` takes :class:`Job` objects (who, what file or bytes, which options),
answers each from a socket of its own connected to the client, and reports an
:class:`Outcome` when a transfer ends. It runs as a thread of the server's process, or
inside worker processes (:func:`worker_main`) so that many transfers use every core instead
of one interpreter lock — which one is the daemon's choice.

The send path is kept short on purpose (see docs/BENCHMARKS.md): one ``recv_into`` into a
reused buffer, the block number read from it, and one ``send`` per data block. Rules:
- a duplicate or stray ACK never causes a resend (the Sorcerer's Apprentice bug); only the
  retransmission timer resends, with backoff, and a client silent for ``retries`` timeouts
  is dropped;
- a client that has not answered anything yet (it may be a spoofed address that never asked)
  gets at most ``unanswered_retries`` resends of the first packet, and never more than one
  window: what a forged request can make us send is bounded (docs/RELIABILITY.md);
- the server may cancel a transfer (:class:`Cancel`) to make room for a new client; the loop
  tells it (:class:`Heard`) once a client has answered, so only silent ones are cancelled;
- with windowsize (RFC 7440) an ACK inside the window means the client saw a gap, so
  sending restarts after the acknowledged block;
- block numbers wrap past 65535 to 0 on the wire; inside, they count on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from . import packets as tp
from .files import CACHE_TOTAL_MAX, Content, FileCache, Refused, netascii

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 0.05
MAX_BACKOFF = 4  # a silent client is dropped within timeout × (1 + 2 + 4 + 4 …)
UNANSWERED_RETRIES = 2  # resends of the first packet to a client that never answered
_DATA_HEADER = struct.Struct("!HH").pack


@dataclass(frozen=True)
class Job:
    """One read request to answer: from ``local`` to ``peer``, a file (``path``) or bytes."""

    peer: tuple[str, int]
    local: str
    name: str
    mode: str
    options: dict[str, str] = field(default_factory=dict)
    path: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Outcome:
    """How a transfer ended. ``failure`` None: the client acknowledged the last block."""

    peer: tuple[str, int]
    name: str
    size: int
    seconds: float
    blksize: int
    window: int
    failure: str | None = None
    aborted: bool = False  # the client sent an ERROR (e.g. firmware probing the size)
    refused: bool = False  # the file could not be opened; an error packet was sent
    cancelled: bool = False  # the server cancelled it (room for a new client)


@dataclass(frozen=True)
class Cancel:
    """Ask a loop to drop the transfer to ``peer`` (it reports an Outcome if it had one)."""

    peer: tuple[str, int]
    reason: str


@dataclass(frozen=True)
class Heard:
    """The client at ``peer`` answered for the first time (it is not a spoofed address)."""

    peer: tuple[str, int]


class Transfer:
    """One read transfer in flight."""

    __slots__ = (
        "acked", "blksize", "content", "deadline", "fd", "heard", "job", "last", "oack",
        "peer", "sent", "sock", "started", "timeout", "tries", "window",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, job: Job, content: Content,
                 neg: tp.Negotiated, timeout: float) -> None:  # fmt: skip
        self.sock = sock
        self.fd = sock.fileno()
        self.job = job
        self.peer = job.peer
        self.content = content
        self.blksize = neg.blksize
        self.window = neg.windowsize
        self.timeout = neg.timeout or timeout
        self.oack = tp.oack(neg.granted) if neg.granted else None
        self.last = content.size // self.blksize + 1  # the final block is short, maybe empty
        self.acked = 0
        self.sent = 0
        self.tries = 0
        self.heard = False  # the client has sent us something since its request
        self.started = time.monotonic()
        self.deadline = self.started + self.timeout

    def send_from(self, first: int) -> None:
        """Send blocks ``first`` … the end of the window."""
        end = self.acked + self.window
        if end > self.last:
            end = self.last
        bs = self.blksize
        data = self.content.data
        send = self.sock.send
        block = first
        while block <= end:
            offset = (block - 1) * bs
            if data is not None:
                send(_DATA_HEADER(tp.DATA, block & 0xFFFF) + data[offset : offset + bs])
            else:
                send(_DATA_HEADER(tp.DATA, block & 0xFFFF) + self.content.block(offset, bs))
            block += 1
        self.sent = end


class TransferLoop:
    """Runs transfers until stopped. ``submit`` is thread-safe; ``on_done`` runs in the loop."""

    def __init__(
        self,
        on_done: Callable[[Outcome | Heard], None],
        *,
        timeout: float = 1.0,
        retries: int = 5,
        unanswered_retries: int = UNANSWERED_RETRIES,
        max_windowsize: int = 64,
        cache_total: int = CACHE_TOTAL_MAX,
    ) -> None:
        self.on_done = on_done
        self.timeout = timeout
        self.retries = retries
        self.unanswered_retries = min(unanswered_retries, retries)
        self.max_windowsize = max_windowsize
        self.cache = FileCache(total_max=cache_total)
        self.transfers: dict[int, Transfer] = {}
        self._inbox: deque[Job | Cancel | None] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._ep = select.epoll()
        self._ep.register(self._wake_r, select.EPOLLIN)
        self._buf = bytearray(1024)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> TransferLoop:
        self._thread = threading.Thread(target=self.run, name="tftp-transfers", daemon=True)
        self._thread.start()
        return self

    def submit(self, job: Job | Cancel | None) -> None:
        self._inbox.append(job)
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
            os.write(self._wake_w, b"j")

    def stop(self) -> None:
        self.submit(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        transfers = self.transfers
        wake = self._wake_r
        poll = self._ep.poll
        buf = self._buf
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        try:
            while not self._stopping:
                for fd, _ in poll(SWEEP_INTERVAL if transfers else 1.0):
                    t = transfers.get(fd)
                    try:
                        if t is None:
                            if fd == wake:
                                self._take_jobs()
                            continue
                        try:
                            n = t.sock.recv_into(buf)
                        except BlockingIOError:
                            continue
                        if n >= 4 and buf[1] == tp.ACK and buf[0] == 0:
                            self._on_ack(t, buf[2] << 8 | buf[3])
                        elif n >= 2 and buf[1] == tp.ERROR and buf[0] == 0:
                            self._on_client_error(t, bytes(buf[:n]))
                    except OSError as exc:  # ICMP port unreachable: the client went away
                        if t is not None:
                            self._finish(t, f"client unreachable ({exc.strerror})")
                    except Exception:  # a bug, not a packet: say so, drop it, keep serving
                        log.exception("TFTP: unexpected error; the service keeps running")
                        if t is not None:
                            self._close(t)
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + SWEEP_INTERVAL
        finally:
            for t in list(transfers.values()):
                self._close(t)
            self._ep.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _take_jobs(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        while self._inbox:
            job = self._inbox.popleft()
            if job is None:
                self._stopping = True
                return
            if isinstance(job, Cancel):
                self._cancel(job)
            else:
                self._begin(job)

    def _cancel(self, cancel: Cancel) -> None:
        for t in self.transfers.values():
            if t.peer == cancel.peer:
                self._finish(t, cancel.reason, cancelled=True)
                return

    def _on_ack(self, t: Transfer, wire: int) -> None:
        if not t.heard:
            t.heard = True
            self._report(Heard(t.peer))
        if t.sent == 0:  # only the OACK is out: ACK 0 starts the data
            if wire == 0:
                t.tries = 0
                t.deadline = time.monotonic() + t.timeout
                t.send_from(1)
            return
        # The absolute block this 16-bit number means: at or after what was acknowledged.
        block = t.acked + ((wire - t.acked) & 0xFFFF)
        if block <= t.acked or block > t.sent:
            return  # a duplicate or a stray: never resend on it (Sorcerer's Apprentice)
        t.acked = block
        t.tries = 0
        if block == t.last:
            self._finish(t, None)
            return
        t.deadline = time.monotonic() + t.timeout
        # Inside the window: the client saw a gap and restarts after ``block`` (RFC 7440).
        t.send_from(block + 1 if block < t.sent else t.sent + 1)

    def _on_client_error(self, t: Transfer, packet: bytes) -> None:
        try:
            err = tp.parse(packet)
        except tp.PacketError:
            err = tp.Error(0, "")
        message = err.message[:60] if isinstance(err, tp.Error) else ""
        code = err.code if isinstance(err, tp.Error) else 0
        self._finish(t, f"the client ended it ({code} {message})", aborted=True)

    def _sweep(self, now: float) -> None:
        for t in [t for t in self.transfers.values() if now >= t.deadline]:
            t.tries += 1
            retries = self.retries if t.heard else self.unanswered_retries
            if t.tries > retries:
                self._finish(t, f"no answer after {retries} retries")
                continue
            t.deadline = now + t.timeout * min(2**t.tries, MAX_BACKOFF)
            try:
                if t.sent == 0 and t.oack is not None:
                    t.sock.send(t.oack)
                else:
                    t.send_from(t.acked + 1)
            except OSError as exc:
                self._finish(t, f"client unreachable ({exc.strerror})")

    # -- starting and ending ---------------------------------------------------------------

    def _open(self, job: Job) -> Content:
        if job.data is not None:
            content = Content(len(job.data), job.data)
        else:
            assert job.path is not None
            content = self.cache.open(job.path)
        if job.mode == "netascii":
            if content.data is None:
                content.close()
                raise Refused(tp.ILLEGAL_OPERATION, "use octet mode for this file",
                              "netascii asked for a file too large to convert")  # fmt: skip
            converted = netascii(content.data)
            content = Content(len(converted), converted)
        return content

    def _begin(self, job: Job) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((job.local, 0))
            sock.connect(job.peer)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            self.on_done(Outcome(job.peer, job.name, 0, 0.0, 0, 0, f"cannot answer: {exc}"))
            return
        try:
            content = self._open(job)
        except Refused as exc:
            with contextlib.suppress(OSError):
                sock.send(tp.error(exc.code, exc.message))
            sock.close()
            self.on_done(Outcome(job.peer, job.name, 0, 0.0, 0, 0, exc.reason, refused=True))
            return
        neg = tp.negotiate(job.options, content.size, max_windowsize=self.max_windowsize)
        t = Transfer(sock, job, content, neg, self.timeout)
        self.transfers[t.fd] = t
        self._ep.register(t.fd, select.EPOLLIN)
        try:
            if t.oack is not None:
                sock.send(t.oack)
            else:
                t.send_from(1)
        except OSError as exc:
            self._finish(t, f"client unreachable ({exc.strerror})")

    def _close(self, t: Transfer) -> None:
        if self.transfers.pop(t.fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._ep.unregister(t.fd)
        t.sock.close()
        t.content.close()

    def _finish(self, t: Transfer, failure: str | None, *, aborted: bool = False,
                cancelled: bool = False) -> None:  # fmt: skip
        self._close(t)
        outcome = Outcome(t.peer, t.job.name, t.content.size, time.monotonic() - t.started,
                          t.blksize, t.window, failure, aborted, cancelled=cancelled)  # fmt: skip
        self._report(outcome)

    def _report(self, message: Outcome | Heard) -> None:
        try:
            self.on_done(message)
        except Exception:  # reporting must never stop serving
            log.exception("TFTP: reporting %r failed", message)


# -- worker processes -------------------------------------------------------------------------


def worker_main(
    jobs: Connection,
    outcomes: Connection,
    params: dict[str, Any],
    init: Callable[[], None] | None,
) -> None:
    """A worker process: runs a :class:`TransferLoop` fed from ``jobs`` until it closes."""
    # The parent decides when we stop (it closes our job pipe): Ctrl-C and a SIGTERM to
    # the whole process group (systemd's default) reach us too, and must not end us
    # before the parent, which would take it for a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if init is not None:
        init()
    lock = threading.Lock()

    def report(message: Outcome | Heard) -> None:
        with lock:
            outcomes.send(message)

    loop = TransferLoop(report, **params).start()
    try:
        while True:
            try:
                job = jobs.recv()
            except (EOFError, OSError):
                break
            if job is None:
                break
            loop.submit(job)
    finally:
        loop.stop()
