"""The local node cache: the last known record of every node, on disk under the data dir.

When etcd does not answer, a machine the registry already knows must still boot with its
profile. What it boots is a pure function of its node record and the settings
(:meth:`pxeserver.boot.BootService.decide`), so the record is the one thing to keep: with
it, the decision, the iPXE script and the cloud-config render exactly as they would with
the store up. The cache is read-through: every node read from or written to the store is
put here (:class:`pxeserver.nodes.resilient.GuardedStore`), and a node changed while the store
was down is put here as the journal left it (:mod:`pxeserver.nodes.journal`).

It is one SQLite file (``<data_dir>/cache.db``, WAL mode) shared by the main process and
every HTTP worker, so a worker started during an outage still knows every node that any
process saw before. Losing it loses nothing but availability during an outage: it is
refilled from the store. ``synchronous=NORMAL``: a crash of pxeserver loses nothing, a
power cut may lose the last puts (the journal, not the cache, is what must survive).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

from ..errors import PxeError
from ..model import MAC, Node
from ..store.sqlitefile import ThreadConnections

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    mac TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    doc TEXT NOT NULL,
    cached_at REAL NOT NULL
);
"""
LOCAL_REVISION = -1  # a node as the journal changed it, ahead of the store


class NodeCache:
    def __init__(self, path: Path, timeout: float = 2.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._conns = ThreadConnections(self.path, timeout, "NORMAL")
        # What this process last put for each MAC, so that re-reading an unchanged node
        # from the store does not rewrite it.
        self._revisions: dict[MAC, int] = {}
        try:
            self._conns.create(SCHEMA)  # 0600: node records carry the nodes' tokens
        except (sqlite3.Error, OSError) as exc:
            raise PxeError(
                f"cannot open the node cache {self.path}: {exc}; the data dir must be writable"
            ) from exc

    def __repr__(self) -> str:
        return f"NodeCache({str(self.path)!r})"

    def _db(self) -> sqlite3.Connection:
        return self._conns.get()

    def get(self, mac: MAC) -> Node | None:
        """The node as last seen here, or None if it never was (or the file is unusable)."""
        try:
            row = self._db().execute("SELECT doc FROM nodes WHERE mac = ?", (mac.value,)).fetchone()
        except sqlite3.Error as exc:
            log.warning("node cache %s: cannot read %s: %s", self.path, mac, exc)
            return None
        return Node.from_dict(json.loads(row[0])) if row else None

    def put(self, node: Node, revision: int = LOCAL_REVISION) -> None:
        """Remember ``node``; ``revision`` is the store's, or LOCAL_REVISION for a node
        changed by the journal. A store read of a revision already put is skipped."""
        if revision != LOCAL_REVISION and self._revisions.get(node.mac) == revision:
            return
        try:
            self._db().execute(
                "INSERT INTO nodes (mac, revision, doc, cached_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(mac) DO UPDATE SET revision = excluded.revision, "
                "doc = excluded.doc, cached_at = excluded.cached_at",
                (node.mac.value, revision, node.to_json()[0], time.time()),
            )
        except sqlite3.Error as exc:
            log.warning("node cache %s: cannot write %s: %s", self.path, node.mac, exc)
            self._revisions.pop(node.mac, None)
            return
        self._revisions[node.mac] = revision

    def put_many(self, nodes: list[tuple[Node, int]]) -> None:
        """:meth:`put` for several (node, revision) in one transaction."""
        fresh = [(n, r) for n, r in nodes if r == LOCAL_REVISION or self._revisions.get(n.mac) != r]
        if not fresh:
            return
        now = time.time()
        rows = [(n.mac.value, r, n.to_json()[0], now) for n, r in fresh]
        db = self._db()
        try:
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO nodes (mac, revision, doc, cached_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(mac) DO UPDATE SET revision = excluded.revision, "
                    "doc = excluded.doc, cached_at = excluded.cached_at",
                    rows,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            log.warning("node cache %s: cannot write %d nodes: %s", self.path, len(rows), exc)
            for n, _ in fresh:
                self._revisions.pop(n.mac, None)
            return
        self._revisions.update({n.mac: r for n, r in fresh})

    def delete(self, mac: MAC) -> None:
        self._revisions.pop(mac, None)
        try:
            self._db().execute("DELETE FROM nodes WHERE mac = ?", (mac.value,))
        except sqlite3.Error as exc:
            log.warning("node cache %s: cannot delete %s: %s", self.path, mac, exc)

    def retain(self, macs: set[MAC]) -> int:
        """Forget every node not in ``macs`` (a full scan of the store: nodes that another
        pxeserver forgot must not boot from here during an outage). How many went."""
        try:
            db = self._db()
            rows = db.execute("SELECT mac FROM nodes").fetchall()
            gone = [mac for (mac,) in rows if MAC.parse(mac) not in macs]
            for mac in gone:
                db.execute("DELETE FROM nodes WHERE mac = ?", (mac,))
                self._revisions.pop(MAC.parse(mac), None)
        except sqlite3.Error as exc:
            log.warning("node cache %s: cannot prune: %s", self.path, exc)
            return 0
        return len(gone)

    def nodes(self) -> list[Node]:
        """Every cached node, in MAC order."""
        try:
            rows = self._db().execute("SELECT doc FROM nodes ORDER BY mac").fetchall()
        except sqlite3.Error as exc:
            log.warning("node cache %s: cannot read: %s", self.path, exc)
            return []
        return [Node.from_dict(json.loads(doc)) for (doc,) in rows]

    def __len__(self) -> int:
        try:
            return int(self._db().execute("SELECT COUNT(*) FROM nodes").fetchone()[0])
        except sqlite3.Error:
            return 0

    def close(self) -> None:
        self._conns.close()
