"""The embedded store: one SQLite file in WAL mode, safe for several threads and processes.

Each node is one JSON document (the same document the etcd store keeps) with a revision
counter for compare-and-swap, and a UNIQUE hostname column so that no two nodes share a
name. Writers take the database lock up front (``BEGIN IMMEDIATE``) so that a
read-then-write never deadlocks against another process; a lock not granted within the
store deadline is ``StoreUnavailable``.

For the HTTP workers' views (:mod:`pxeserver.nodes.view`) every row also carries its
``head`` (the record without its timeline, a few hundred bytes) and the ``seq`` of the
transaction that last wrote it (a counter every write transaction bumps); a deleted node
leaves a row in ``gone`` for a while. A view asks :meth:`SQLiteStore.data_version` (a
read of SQLite's shared memory: did another connection commit?) and, when it says yes,
:meth:`SQLiteStore.heads_since` its last ``seq``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import AlreadyExists, Conflict, HostnameTaken, StoreUnavailable
from ..model import MAC, Node, Versioned
from . import MAX_HOSTNAME_PROBES, BatchConflict, Deliver, Head, HostnameFor, check_batch
from .sqlitefile import ThreadConnections

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    mac TEXT PRIMARY KEY,
    hostname TEXT NOT NULL UNIQUE,
    revision INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gone (
    mac TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    at REAL NOT NULL
);
"""
# Columns a store made before the views existed lacks; added (and the heads filled in)
# by the first process that opens it.
VIEW_COLUMNS = (
    "ALTER TABLE nodes ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE nodes ADD COLUMN head TEXT",
)
# How long a deleted node's row in ``gone`` is kept: a view that has not looked for
# longer reads every node again (see heads_since).
GONE_KEPT_S = 600.0


class SQLiteStore:
    def __init__(self, path: Path, timeout: float = 3.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._conns = ThreadConnections(self.path, timeout, "NORMAL")
        # Writers of this process queue here rather than in SQLite's busy handler, which
        # polls with sleeps of up to 100 ms: with 8 threads that made a p99 of 80 ms and
        # fewer writes per second than one thread. Other processes still meet the busy
        # handler (BEGIN IMMEDIATE); within one process the lock hands over at once.
        self._write_lock = threading.Lock()
        try:
            self._conns.create(SCHEMA)
            self._add_view_columns()
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    def _add_view_columns(self) -> None:
        """Give a store made by an earlier pxeserver its ``seq`` and ``head`` columns."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(nodes)")}
            if "head" not in columns:
                for statement in VIEW_COLUMNS:
                    db.execute(statement)
                rows = db.execute("SELECT mac, doc FROM nodes").fetchall()
                for mac, doc in rows:
                    head = json.dumps(Node.from_dict(json.loads(doc)).head_dict())
                    db.execute("UPDATE nodes SET head = ? WHERE mac = ?", (head, mac))
            db.execute("CREATE INDEX IF NOT EXISTS nodes_seq ON nodes (seq)")
            db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES ('seq', 0)")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _db(self) -> sqlite3.Connection:
        return self._conns.get()

    @staticmethod
    def _next_seq(db: sqlite3.Connection) -> int:
        """The ``seq`` of this write transaction (see the module docstring)."""
        row = db.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'seq' RETURNING value"
        ).fetchone()
        return int(row[0])

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        if not self._write_lock.acquire(timeout=self.timeout):
            raise StoreUnavailable(
                f"SQLite store {self.path}: no write turn within {self.timeout} s"
            )
        try:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            else:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as exc:
                    db.execute("ROLLBACK")
                    raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        finally:
            self._write_lock.release()

    @staticmethod
    def _versioned(doc: str, revision: int) -> Versioned:
        return Versioned(Node.from_dict(json.loads(doc)), revision)

    def get(self, mac: MAC) -> Versioned | None:
        try:
            row = (
                self._db()
                .execute("SELECT doc, revision FROM nodes WHERE mac = ?", (mac.value,))
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        return self._versioned(*row) if row else None

    def scan(self) -> list[Versioned]:
        try:
            rows = self._db().execute("SELECT doc, revision FROM nodes ORDER BY mac").fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        return [self._versioned(doc, rev) for doc, rev in rows]

    def create(self, node: Node, hostname_for: HostnameFor) -> Versioned:
        try:
            with self._write() as db:
                if db.execute("SELECT 1 FROM nodes WHERE mac = ?", (node.mac.value,)).fetchone():
                    raise AlreadyExists(str(node.mac))
                row = db.execute("SELECT value FROM counters WHERE name = 'hostname'").fetchone()
                index = row[0] if row else 0
                for _ in range(MAX_HOSTNAME_PROBES):
                    index += 1
                    hostname = hostname_for(index)
                    taken = db.execute(
                        "SELECT 1 FROM nodes WHERE hostname = ?", (hostname,)
                    ).fetchone()
                    if not taken:
                        break
                else:
                    raise HostnameTaken(
                        f"no free hostname for {node.mac} in {MAX_HOSTNAME_PROBES} tries"
                    )
                node = node.replace(hostname=hostname)
                db.execute(
                    "INSERT INTO nodes (mac, hostname, revision, doc, head, seq) "
                    "VALUES (?, ?, 1, ?, ?, ?)",
                    (node.mac.value, hostname, *self._texts(node), self._next_seq(db)),
                )
                db.execute("DELETE FROM gone WHERE mac = ?", (node.mac.value,))
                db.execute(
                    "INSERT INTO counters (name, value) VALUES ('hostname', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    (index,),
                )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        return Versioned(node, 1)

    def update(self, old: Versioned, node: Node) -> Versioned:
        revision = old.revision
        # Encoded before the write turn: the lock is held for the statements only.
        doc, head = self._texts(node)
        try:
            with self._write() as db:
                # The node at ``revision`` holds its old hostname, so keeping it needs no
                # look-up: the compare-and-swap below decides.
                if node.hostname != old.node.hostname:
                    owner = db.execute(
                        "SELECT mac FROM nodes WHERE hostname = ?", (node.hostname,)
                    ).fetchone()
                    if owner and owner[0] != node.mac.value:
                        raise HostnameTaken(f"{node.hostname} belongs to {owner[0]}")
                cur = db.execute(
                    "UPDATE nodes SET hostname = ?, revision = revision + 1, doc = ?, "
                    "head = ?, seq = ? WHERE mac = ? AND revision = ?",
                    (node.hostname, doc, head, self._next_seq(db), node.mac.value, revision),
                )
                if cur.rowcount != 1:
                    raise Conflict(f"{node.mac} changed since revision {revision}")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        return Versioned(node, revision + 1)

    def delete(self, mac: MAC, revision: int | None = None) -> bool:
        try:
            with self._write() as db:
                if revision is None:
                    cur = db.execute("DELETE FROM nodes WHERE mac = ?", (mac.value,))
                else:
                    cur = db.execute(
                        "DELETE FROM nodes WHERE mac = ? AND revision = ?", (mac.value, revision)
                    )
                    if (
                        cur.rowcount == 0
                        and db.execute("SELECT 1 FROM nodes WHERE mac = ?", (mac.value,)).fetchone()
                    ):
                        raise Conflict(f"{mac} changed since revision {revision}")
                if cur.rowcount == 1:
                    self._note_gone(db, mac)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        return cur.rowcount == 1

    def _note_gone(self, db: sqlite3.Connection, mac: MAC) -> None:
        now = time.time()
        db.execute(
            "INSERT INTO gone (mac, seq, at) VALUES (?, ?, ?) ON CONFLICT(mac) DO UPDATE "
            "SET seq = excluded.seq, at = excluded.at",
            (mac.value, self._next_seq(db), now),
        )
        db.execute("DELETE FROM gone WHERE at < ?", (now - GONE_KEPT_S,))

    @staticmethod
    def _texts(node: Node) -> tuple[str, str]:
        """The stored JSON of ``node``: the whole record, and its head."""
        return node.to_json()

    def get_many(self, macs: Sequence[MAC]) -> dict[MAC, Versioned]:
        found: dict[MAC, Versioned] = {}
        try:
            for i in range(0, len(macs), 500):
                part = [m.value for m in macs[i : i + 500]]
                marks = ",".join("?" * len(part))
                rows = self._db().execute(
                    f"SELECT doc, revision FROM nodes WHERE mac IN ({marks})", part
                )
                for doc, revision in rows:
                    versioned = self._versioned(doc, revision)
                    found[versioned.node.mac] = versioned
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        return found

    def update_many(self, pairs: Sequence[tuple[Versioned, Node]]) -> list[Versioned]:
        check_batch(pairs)
        texts = [self._texts(new) for _, new in pairs]  # encoded before the write turn
        try:
            with self._write() as db:
                seq = self._next_seq(db)
                changed: dict[MAC, Versioned | None] = {}
                for (old, new), (doc, head) in zip(pairs, texts):
                    cur = db.execute(
                        "UPDATE nodes SET revision = revision + 1, doc = ?, head = ?, seq = ? "
                        "WHERE mac = ? AND revision = ?",
                        (doc, head, seq, new.mac.value, old.revision),
                    )
                    if cur.rowcount != 1:
                        row = db.execute(
                            "SELECT doc, revision FROM nodes WHERE mac = ?", (new.mac.value,)
                        ).fetchone()
                        changed[new.mac] = self._versioned(*row) if row else None
                if changed:
                    raise BatchConflict(changed)  # rolls the transaction back
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        return [Versioned(new, old.revision + 1) for old, new in pairs]

    # -- what the HTTP workers' views follow ----------------------------------------------

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` on this thread's connection: it changes when
        another connection (of any process) committed since this one last asked."""
        try:
            return int(self._db().execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    def heads_since(self, seq: int) -> tuple[list[Head], int]:
        """The heads written after transaction ``seq`` (nodes deleted since: text None),
        oldest first, and the ``seq`` they bring the reader to (-1: every node)."""
        try:
            db = self._db()
            db.execute("BEGIN")
            try:
                now = int(db.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0])
                rows = db.execute(
                    "SELECT mac, revision, head, seq FROM nodes WHERE seq > ? UNION ALL "
                    "SELECT mac, 0, NULL, seq FROM gone WHERE seq > ? ORDER BY 4",
                    (seq, seq),
                ).fetchall()
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        heads = [Head(MAC(mac), revision, head) for mac, revision, head, _ in rows]
        return heads, now

    def shrink_memory(self) -> None:
        """Free this thread's connection's page cache (it fills again as pages are read)."""
        try:
            self._db().execute("PRAGMA shrink_memory")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    def ping(self) -> None:
        try:
            self._db().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    def close(self) -> None:
        self._conns.close()


class SQLiteFeed:
    """The SQLite store as a view follows it (:class:`~pxeserver.store.NodeFeed`): every
    ``interval`` seconds, ``PRAGMA data_version``; when another connection committed, the
    heads written since the last look."""

    def __init__(self, store: SQLiteStore, interval: float = 0.02) -> None:
        self.store = store
        self.interval = interval

    def snapshot(self) -> tuple[list[Head], int]:
        heads = self.store.heads_since(-1)
        # Every node's page was read once; the follow that comes next reads a few. Without
        # this the connection kept ~2 MB of cached pages for good (in each HTTP worker).
        self.store.shrink_memory()
        return heads

    def follow(self, cursor: int, deliver: Deliver, stopping: threading.Event) -> None:
        version = -1
        looked = time.monotonic()
        while True:
            now = self.store.data_version()
            if time.monotonic() - looked > GONE_KEPT_S / 2:
                # asleep (a stopped process?) for longer than deletions are remembered
                raise StoreUnavailable("the view fell behind the store; it reads every node")
            looked = time.monotonic()
            if now != version:  # also the first time: commits before it are read here
                version = now
                heads, cursor = self.store.heads_since(cursor)
                if heads:
                    deliver(heads, cursor)
            if stopping.wait(self.interval):
                return
