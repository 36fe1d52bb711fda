"""One SQLite file opened from many threads: a connection per thread, all closed together.

The embedded store, the node cache and the journal each keep one SQLite file in WAL
mode that several threads of a process (and several processes) use at once. A
connection must not be shared by threads in the middle of a transaction, so each thread
gets its own on first use; :meth:`ThreadConnections.close` closes every one of them.

Each file is readable by pxeserver's user only (0600, and so its -wal and -shm files):
the store and the node cache hold every node's token, the journal the changes waiting for
the store. A file an earlier version left readable by others is narrowed when opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)
PRIVATE = 0o600
SIDECARS = ("-wal", "-shm", "-journal")


class ThreadConnections:
    def __init__(self, path: Path, timeout: float, synchronous: str) -> None:
        """``synchronous``: SQLite's ``PRAGMA synchronous`` for every connection
        (``NORMAL``: in WAL mode a process crash loses nothing and a power cut never
        corrupts the file; ``FULL``: every commit is fsync'd before it returns)."""
        self.path = path
        self.timeout = timeout
        self.synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def create(self, schema: str) -> None:
        """Make the file 0600 before SQLite first opens it (SQLite gives its -wal and -shm
        files the file's mode), switch it to WAL and apply ``schema``. Raises
        ``sqlite3.Error`` or ``OSError``; the caller says what the file is for."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(mode=PRIVATE, exist_ok=True)
        self._narrow()
        db = self.get()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)

    def _narrow(self) -> None:
        """Make the file and the sidecars an earlier run left 0600 (they may be 0644)."""
        for path in (self.path, *(self.path.with_name(self.path.name + s) for s in SIDECARS)):
            try:
                mode = path.stat().st_mode & 0o777
                if mode & ~PRIVATE:
                    os.chmod(path, PRIVATE)
                    log.warning("%s was readable by other users (mode %o); it is 0600 now: "
                                "it holds node tokens", path, mode)  # fmt: skip
            except FileNotFoundError:
                continue
            except OSError as exc:  # not ours: say so, and go on (it was so before)
                log.warning("%s is readable by other users and could not be narrowed to "
                            "0600 (%s); chmod 600 it: it holds node tokens", path, exc)  # fmt: skip

    def get(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (autocommit: callers say BEGIN)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # ``timeout`` is SQLite's busy timeout: how long to wait for another
            # process's lock before "database is locked".
            db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            self._all.clear()
        self._local = threading.local()
