"""The local journal: writes the store could not take, kept on disk until it takes them.

While etcd does not answer, a known node still boots, and what happens to it (a DHCP
sighting, its iPXE script and cloud-config served, ``ready``, heartbeats) is a change the
registry must not lose. Each such change is appended here, durably, before the caller is
told it succeeded; :class:`pxeserver.nodes.resilient.Replayer` applies the entries to the store
in the order they were appended once it answers again, and removes each one after the
store took it.

Replaying is idempotent: an entry carries the event id the change will have in the
registry (:class:`pxeserver.nodes.registry.Change` ``event_id``), and the registry skips an
event whose id the node has applied lately. So an entry replayed twice (pxeserver killed
between the store's write and the entry's removal) is applied once, and an entry whose
first write did land although its answer was lost is not applied again either.

One SQLite file (``<data_dir>/journal.db``) in WAL mode with ``synchronous=FULL``: a
commit is on disk (fsync'd) before ``append`` returns, so a write acknowledged to a
machine survives ``kill -9`` and a power cut. Entries are numbered by an AUTOINCREMENT
key, never reused, which is the replay order. The main process and every HTTP worker
append to the same file; only the main process replays.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PxeError, StoreUnavailable
from ..model import MAC, EventKind, Machine
from ..store.sqlitefile import ThreadConnections
from .registry import Change

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    mac TEXT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    change TEXT NOT NULL,
    creates INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_mac ON entries (mac);
CREATE TABLE IF NOT EXISTS stats (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
OUTCOMES = ("journalled", "replayed", "dropped")


@dataclass(frozen=True)
class Entry:
    seq: int
    mac: MAC
    change: Change
    creates: bool = False  # a sighting of a machine not in the registry: replay creates it


CHANGE_FIELDS = tuple(f.name for f in dataclasses.fields(Change))
MACHINE_FIELDS = tuple(f.name for f in dataclasses.fields(Machine))
JSON_AS_IS = frozenset({str, int, float, bool, type(None)})  # exactly these, not subclasses


def change_to_dict(change: Change) -> dict[str, Any]:
    """Every field of ``change``, JSON-ready. Generic over the fields, so that one added
    to :class:`~pxeserver.nodes.registry.Change` (e.g. ``installs``) is journalled too; a field
    whose value JSON cannot hold is an error here, not a write lost on replay."""
    if change.event_id is None or change.at is None:
        raise ValueError("a journalled change needs its event id and time")
    d: dict[str, Any] = {}
    for name in CHANGE_FIELDS:
        value = getattr(change, name)
        if type(value) in JSON_AS_IS:  # most fields: no isinstance chain (a step per answer)
            pass
        elif isinstance(value, EventKind):
            value = value.value
        elif isinstance(value, Machine):
            value = {k: getattr(value, k) for k in MACHINE_FIELDS}
            value["mac"] = value["mac"].value
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise TypeError(f"cannot journal Change.{name} = {value!r}")
        d[name] = value
    return d


def change_from_dict(d: dict[str, Any]) -> Change:
    unknown = d.keys() - CHANGE_FIELDS
    if unknown:  # written by a newer pxeserver: replaying without them would lose them
        raise ValueError(f"journal entry has fields this pxeserver does not know: {unknown}")
    args = dict(d)
    args["kind"] = EventKind(d["kind"])
    f = d.get("facts")
    if f is not None:
        args["facts"] = Machine(**{**f, "mac": MAC.parse(f["mac"])})
    return Change(**args)


class Journal:
    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._conns = ThreadConnections(self.path, timeout, "FULL")
        try:
            self._conns.create(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise PxeError(
                f"cannot open the journal {self.path}: {exc}; the data dir must be writable"
            ) from exc

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def _db(self) -> sqlite3.Connection:
        return self._conns.get()

    def _bump(self, db: sqlite3.Connection, name: str) -> None:
        db.execute(
            "INSERT INTO stats (name, value) VALUES (?, 1) "
            "ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (name,),
        )

    def append(self, mac: MAC, change: Change, *, creates: bool = False) -> bool:
        """Keep ``change`` for ``mac`` until the store takes it; on disk when this returns.
        With ``creates``, replaying it creates the node if the registry has none.

        False if an entry with the same event id is there already (nothing added). Raises
        StoreUnavailable if the journal cannot be written: the caller must not be told
        that the write succeeded.
        """
        return self.append_many([(mac, change, creates)]) == 1

    def append_many(self, entries: list[tuple[MAC, Change, bool]]) -> int:
        """:meth:`append` for several changes (mac, change, creates), in one transaction:
        one fsync for all. How many were added (an event id already there adds nothing)."""
        docs = [(mac.value, change.event_id, json.dumps(change_to_dict(change)), int(creates))
                for mac, change, creates in entries]  # fmt: skip
        added = 0
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                for doc in docs:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO entries (mac, event_id, change, creates) "
                        "VALUES (?, ?, ?, ?)",
                        doc,
                    )
                    if cur.rowcount == 1:
                        added += 1
                        self._bump(db, "journalled")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"the store is unavailable and the journal {self.path} cannot be written: {exc}"
            ) from exc
        return added

    def head(self, limit: int = 100) -> list[Entry]:
        """The oldest ``limit`` entries, oldest first: the order to replay them in."""
        rows = (
            self._db()
            .execute("SELECT seq, mac, change, creates FROM entries ORDER BY seq LIMIT ?", (limit,))
            .fetchall()
        )
        return [
            Entry(seq, MAC.parse(mac), change_from_dict(json.loads(c)), bool(creates))
            for seq, mac, c, creates in rows
        ]

    def done(self, seq: int, outcome: str = "replayed") -> None:
        """Remove entry ``seq``: the store took it (``replayed``) or never will (``dropped``)."""
        self.done_many([(seq, outcome)])

    def done_many(self, outcomes: list[tuple[int, str]]) -> None:
        """Remove several entries in one transaction (one fsync), each with its outcome."""
        for _, outcome in outcomes:
            if outcome not in OUTCOMES[1:]:
                raise ValueError(f"outcome must be replayed or dropped, not {outcome!r}")
        if not outcomes:
            return
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            for seq, outcome in outcomes:
                if db.execute("DELETE FROM entries WHERE seq = ?", (seq,)).rowcount == 1:
                    self._bump(db, outcome)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def pending(self, mac: MAC) -> bool:
        """Whether ``mac`` has entries waiting (its later changes must queue behind them)."""
        try:
            row = (
                self._db()
                .execute("SELECT 1 FROM entries WHERE mac = ? LIMIT 1", (mac.value,))
                .fetchone()
            )
        except sqlite3.Error as exc:
            log.warning("journal %s: cannot read: %s", self.path, exc)
            return False
        return row is not None

    def macs(self) -> set[MAC]:
        """The MACs with entries waiting."""
        try:
            rows = self._db().execute("SELECT DISTINCT mac FROM entries").fetchall()
        except sqlite3.Error as exc:
            log.warning("journal %s: cannot read: %s", self.path, exc)
            return set()
        return {MAC.parse(mac) for (mac,) in rows}

    def unknown(self) -> int:
        """Machines not in the registry with sightings waiting (a flood of them is capped)."""
        row = (
            self._db()
            .execute("SELECT COUNT(DISTINCT mac) FROM entries WHERE creates = 1")
            .fetchone()
        )
        return int(row[0])

    def depth(self) -> int:
        """Entries waiting for the store."""
        try:
            return int(self._db().execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        except sqlite3.Error as exc:
            log.warning("journal %s: cannot read: %s", self.path, exc)
            return 0

    def stats(self) -> dict[str, int]:
        """Entries journalled, replayed and dropped over the life of this file."""
        rows = self._db().execute("SELECT name, value FROM stats").fetchall()
        found = {str(k): int(v) for k, v in rows}
        return {name: found.get(name, 0) for name in OUTCOMES}

    def close(self) -> None:
        self._conns.close()
