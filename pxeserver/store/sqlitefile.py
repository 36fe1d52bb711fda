"""One SQLite file opened from many threads: a connection per thread, all closed together.

The embedded store, the node cache and the journal each keep one SQLite file in WAL
mode that several threads of a process (and several processes) use at once. A
connection must not be shared by threads in the middle of a transaction, so each thread
gets its own on first use; :meth:`ThreadConnections.close` closes every one of them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path


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

    def create(self, schema: str, mode: int | None = None) -> None:
        """Make the file (with ``mode``, if given, before SQLite first opens it: its -wal
        and -shm files take the file's mode), switch it to WAL and apply ``schema``. Raises
        ``sqlite3.Error`` or ``OSError``; the caller says what the file is for."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if mode is not None:
            self.path.touch(mode=mode, exist_ok=True)
        db = self.get()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)

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
