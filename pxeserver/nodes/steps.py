"""The step logs: boot steps an HTTP worker answered, noted before the answer goes out.

A known machine is answered from memory (:mod:`pxeserver.nodes.view`); what it was
served (its iPXE script, its cloud-config) is a boot step the registry must record. The
worker does not wait for the store: it appends the step, one JSON line, to its own log
file under ``<data_dir>/steps/`` and answers. A ``write`` to a file is in the kernel's
page cache when it returns, so ``kill -9`` of the worker or of the whole server loses no
step that was answered (a power cut may lose the last second or so, as it may lose the
embedded store's last commits, which are not fsync'd either). The main process reads
every log (:class:`StepReader`) and writes the steps to the store in batches
(:mod:`pxeserver.nodes.recorder`).

Each log is ``<pid>-<random>-<n>.log``, written by one process, which holds an exclusive
``flock`` on it while it may still append: a log nobody holds is finished once read to
its end (its writer died, or moved on to its next log past ``MAX_LOG_BYTES``). Beside
each log, ``<log>.done`` holds how many of its bytes the store has taken: after a crash
the main process starts reading there, and a step written but not yet marked done is
written again, which the step's event id makes harmless (see :func:`StepReader.read`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from ..model import MAC
from .change import RECENT_IDS, Change
from .journal import change_from_dict, change_to_dict

log = logging.getLogger(__name__)

MAX_LOG_BYTES = 8 << 20
# At most this many steps of one node in one read: a read written to the store but not
# marked done (a crash in between) is written again, and the node must still remember
# the event ids of all of them (it keeps RECENT_IDS) to apply each once.
MAX_STEPS_PER_NODE = RECENT_IDS // 2
READ_BYTES = 4 << 20
# A step's line: json.dumps's bytes (its defaults: ASCII only, ", " and ": "), from one
# encoder made once. A step is a fresh flat dict, never circular: nothing to check.
_STEP_JSON = json.JSONEncoder(check_circular=False)


class StepLog:
    """The writing side, one per HTTP worker process."""

    def __init__(self, folder: Path, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._number = 0
        self._lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._open_next()

    def _open_next(self) -> None:
        self._number += 1
        path = self.folder / f"{self._name}-{self._number:06d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours until closed: the reader waits for more
        if self._fd >= 0:
            os.close(self._fd)  # the previous log: finished once read
        self._fd, self._size = fd, 0

    def note(self, mac: MAC, change: Change) -> None:
        """Append one step; on disk (the page cache) when this returns. ``change`` must
        carry its time and event id. Raises OSError if it cannot be written."""
        line = _STEP_JSON.encode({"mac": mac.value, **change_to_dict(change)}).encode() + b"\n"
        with self._lock:
            if self._size + len(line) > self.max_bytes:
                self._open_next()
            os.write(self._fd, line)
            self._size += len(line)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


@dataclass
class _Log:
    path: Path
    fd: int
    done: int  # bytes the store has taken
    read: int  # bytes handed out by read()
    finished: bool = False  # nobody may append any more


class StepReader:
    """The reading side, in the main process: every log's new steps, and what is done."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._logs: dict[str, _Log] = {}
        self.skipped = 0  # unreadable lines (a writer killed in the middle of one)
        self._capped = False

    @property
    def capped(self) -> bool:
        """True if the last :meth:`read` left steps already noted for a later read: a node
        had more than ``MAX_STEPS_PER_NODE``, or a log more than ``READ_BYTES``. Read
        again at once to catch up (a machine asked for faster than reads come)."""
        return self._capped

    def _scan(self) -> None:
        for path in sorted(self.folder.glob("*.log")):
            if path.name not in self._logs:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                done = _read_done(path)
                self._logs[path.name] = _Log(path, fd, done, done)

    def read(self) -> list[tuple[MAC, Change]]:
        """The steps noted since the last read, each log's in its order; at most
        ``MAX_STEPS_PER_NODE`` of one node (the rest in a later read: see :attr:`capped`)."""
        self._scan()
        self._capped = False
        steps: list[tuple[MAC, Change]] = []
        per_node: dict[MAC, int] = {}
        for entry in self._logs.values():
            self._read_log(entry, steps, per_node)
        return steps

    def _read_log(
        self, entry: _Log, steps: list[tuple[MAC, Change]], per_node: dict[MAC, int]
    ) -> None:
        if not entry.finished:
            entry.finished = _unlocked(entry.fd)  # asked first: then what follows is all
        data = os.pread(entry.fd, READ_BYTES, entry.read)
        end = data.rfind(b"\n") + 1
        offset = entry.read
        for line in data[:end].splitlines(keepends=True):
            step = _parse(line, entry.path)
            if step is not None:
                if per_node.get(step[0], 0) >= MAX_STEPS_PER_NODE:
                    self._capped = True
                    break  # this log's next steps wait for the next read
                per_node[step[0]] = per_node.get(step[0], 0) + 1
                steps.append(step)
            offset += len(line)
        else:
            if len(data) == READ_BYTES:
                self._capped = True  # the log may hold more than one read takes
            tail = len(data) - end
            if entry.finished and tail and len(data) < READ_BYTES:
                log.warning("%s: %d bytes after the last whole line (its writer was killed "
                            "while writing it); skipped", entry.path, tail)  # fmt: skip
                self.skipped += 1
                offset += tail
        entry.read = offset

    def mark_done(self) -> None:
        """Everything read so far is in the store: say so on disk, and remove the logs
        that are finished and done."""
        for name, entry in list(self._logs.items()):
            if entry.read != entry.done:
                _write_done(entry.path, entry.read)
                entry.done = entry.read
            if entry.finished and entry.read >= os.fstat(entry.fd).st_size:
                os.close(entry.fd)
                entry.path.unlink(missing_ok=True)
                _done_path(entry.path).unlink(missing_ok=True)
                del self._logs[name]

    def rewind(self) -> None:
        """Forget what was read but not done: it is read again (the store did not take it)."""
        for entry in self._logs.values():
            entry.read = entry.done

    def pending(self) -> int:
        """Bytes noted in the logs that the store has not taken yet."""
        self._scan()
        return sum(max(0, os.fstat(e.fd).st_size - e.done) for e in self._logs.values())

    def close(self) -> None:
        for entry in self._logs.values():
            os.close(entry.fd)
        self._logs.clear()


def _parse(line: bytes, path: Path) -> tuple[MAC, Change] | None:
    try:
        d = json.loads(line)
        mac = MAC.parse(d.pop("mac"))
        return mac, change_from_dict(d)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("%s: unreadable step %r skipped: %s", path, line[:80], exc)
        return None


def _unlocked(fd: int) -> bool:
    """True if no process holds the log for writing (its writer closed it or died)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _done_path(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def _read_done(path: Path) -> int:
    try:
        return int(_done_path(path).read_text() or 0)
    except (OSError, ValueError):
        return 0


def _write_done(path: Path, offset: int) -> None:
    """``offset`` into ``<log>.done``: one write of a fixed width, never a torn number."""
    fd = os.open(_done_path(path), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.pwrite(fd, f"{offset:020d}".encode(), 0)
    finally:
        os.close(fd)
