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
- :class:`pxeserver.tftp.pool.TransferPool` runs transfers, in a thread of this process or
  in spawned processes (the daemon chooses), started and retired on demand;
- :class:`pxeserver.tftp.slots.Slots` counts the transfers against the limits
  (``limits.tftp_*`` in the settings; docs/RELIABILITY.md): per client, in all, and which
  stalled client gives way when all are held. At most ``client_rate`` new requests a second
  from one address (twice that in a burst) are taken; the rest are dropped unanswered.

Every finished transfer is logged with the MAC when ProxyDHCP saw the client's address, and
handed to the boot policy as a TFTP event on that node. Refusals get an error packet
("file not found" / "access violation") and one log line per client, name and reason a
minute. Options follow :func:`pxeserver.tftp.packets.negotiate`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import re
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .. import metrics
from ..errors import NotFound, PxeError, StoreUnavailable
from ..host.netif import enlarge_receive_buffer
from ..model import MAC, Machine
from ..ratelimit import KeyedBuckets, LogBudget, left_out
from . import packets as tp
from .files import Refused, locate
from .pool import IDLE_RETIRE, TransferPool
from .slots import Slots
from .transfers import UNANSWERED_RETRIES, Heard, Job, Outcome

log = logging.getLogger(__name__)

IP_PKTINFO = 8  # Linux <netinet/in.h>; Python 3.11's socket module does not export it
_PKTINFO = struct.Struct("=I4s4s")
_PXELINUX_MAC = re.compile(r"pxelinux\.cfg/01-([0-9a-fA-F]{2}(?:-[0-9a-fA-F]{2}){5})")
REFUSAL_LOG_WINDOW = 60.0
# pxeserver_tftp_errors_total{reason} for the error packets sent
_ERROR_REASONS = {tp.FILE_NOT_FOUND: "not-found", tp.ACCESS_VIOLATION: "access-violation",
                  tp.ILLEGAL_OPERATION: "malformed", tp.NOT_DEFINED: "busy-or-store"}  # fmt: skip


# Defaults of the limits (settings: limits.tftp_sessions, …_per_client, tftp_requests_…).
MAX_TRANSFERS = 1024
MAX_PER_CLIENT = 4
CLIENT_RATE = 10.0


class TftpBoot(Protocol):
    """What the TFTP service asks the boot policy (:class:`pxeserver.boot.BootService`)."""

    def chain_script(self, base: str) -> str: ...

    def pxelinux_config(self, machine: Machine, base: str) -> str: ...

    def machine_at(self, ip: str) -> Machine | None: ...

    def note_transfer(self, ip: str, detail: str) -> None: ...


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
        self.max_per_client = max_per_client
        self.timeout = timeout
        self._rate = KeyedBuckets(client_rate, max(1.0, 2 * client_rate))
        params = {
            "timeout": timeout,
            "retries": retries,
            "unanswered_retries": unanswered_retries,
            "max_windowsize": max_windowsize,
        }
        self.counters = {"requests": 0, "completed": 0, "failed": 0, "refused": 0, "bad": 0,
                         "limited": 0, "cancelled": 0}  # fmt: skip
        self.sock: socket.socket | None = None
        self._slots = Slots(max_transfers, max_per_client, timeout)
        self._lock = threading.Lock()
        # The transfer loops; slots and loops change together, under the same lock.
        self.pool = TransferPool(params, self._on_done, self._slots.lost, self._lock,
                                 workers=workers, init=worker_init,
                                 idle_retire=idle_retire)  # fmt: skip
        self._refusals: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._log_budget = LogBudget()  # refusal lines a second, whatever their kind
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._renderers: concurrent.futures.ThreadPoolExecutor | None = None

    # -- life cycle ------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind the listening socket (the caller may drop privileges after this)."""
        # No SO_REUSEADDR: a UDP port has no TIME_WAIT to wait out, and without it the
        # kernel refuses a port that another program (or server) has bound.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
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
        self._renderers = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="tftp-render")
        self.pool.start()
        self._thread = threading.Thread(target=self._listen, name="tftp", daemon=True)
        self._thread.start()
        where = f"{self.pool.workers} worker processes" if self.pool.workers else "a thread"
        log.info("TFTP on %s:%d serving %s (transfers in %s)", self.address, self.port,
                 self.root, where)  # fmt: skip
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._renderers is not None:
            self._renderers.shutdown(wait=True, cancel_futures=True)
            self._renderers = None
        self.pool.stop()
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
                self.pool.retire_idle()
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
            self.pool.retire_idle()

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
            if peer in self._slots:
                return  # the client repeated its request before our first answer reached it
            busy, victim = self._slots.admit(peer)
        if victim is not None:
            self.pool.cancel(*victim)
        if busy is not None:
            metrics.limited.labels(what="tftp-session").inc()
            self._refuse(peer, tp.NOT_DEFINED, busy, busy, req.filename)
            return
        job = Job(peer, local, req.filename, req.mode, dict(req.options))
        render = self._dynamic(req.filename, peer[0], local)
        if render is not None:
            assert self._renderers is not None
            self._renderers.submit(self._render, job, render)
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

    def _dispatch(self, job: Job) -> None:
        with self._lock:
            index = self.pool.choose_locked()
            slot = self._slots.get(job.peer) or self._slots.add(job.peer, index)
            slot.index = index
            self.pool.began_locked(index)
        try:
            self.pool.submit(index, job)
        except OSError as exc:  # the worker is gone; its reader thread starts another
            log.warning("TFTP: transfer process %d is gone (%s); %s refused", index, exc,
                        job.name)  # fmt: skip
            self._release(job.peer)
            self._refuse(job.peer, tp.NOT_DEFINED, "server busy, try again",
                         "transfer process gone", job.name)  # fmt: skip

    def _release(self, peer: tuple[str, int]) -> None:
        with self._lock:
            slot = self._slots.drop(peer)
            if slot is not None and slot.index >= 0:
                self.pool.ended_locked(slot.index)

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
                slot = self._slots.get(o.peer)
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
            return len(self._slots)
