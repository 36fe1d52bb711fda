"""Node stores: one interface, two backends (SQLite embedded, etcd).

Every change to a node is a compare-and-swap on the revision it was read at, so two
pxeserver processes on one store never lose each other's writes. Hostnames are unique
across the store: the backend reserves a hostname in the same atomic step that creates or
renames a node. Backends raise only :mod:`pxeserver.errors` exceptions:
``StoreUnavailable`` when the store cannot answer within its deadline, ``Conflict`` when a
compare-and-swap lost, ``HostnameTaken``, ``AlreadyExists``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

from ..errors import Conflict
from ..model import MAC, Node, Versioned

# Given a counter value (1, 2, …), the hostname to try; the store probes forward until
# it finds one that is free.
HostnameFor = Callable[[int], str]

MAX_HOSTNAME_PROBES = 1000
# Nodes in one update_many: etcd refuses a transaction of more than 128 operations by
# default (--max-txn-ops), and a batch compares, writes and (on a conflict) reads each.
MAX_BATCH = 64


class BatchTooLarge(ValueError):
    """The records of an :meth:`NodeStore.update_many` are more than one transaction may
    carry (etcd: --max-request-bytes); write them in smaller batches."""


class BatchConflict(Conflict):
    """An :meth:`NodeStore.update_many` wrote nothing: some nodes changed since they were
    read. ``current`` holds those nodes as they are now (None: gone), to retry with."""

    def __init__(self, current: Mapping[MAC, Versioned | None]) -> None:
        super().__init__(f"{len(current)} nodes changed since they were read")
        self.current = dict(current)


def check_batch(pairs: Sequence[tuple[Versioned, Node]]) -> None:
    """ValueError unless ``pairs`` is an update_many every backend takes."""
    if len(pairs) > MAX_BATCH:
        raise ValueError(f"update_many takes at most {MAX_BATCH} nodes, not {len(pairs)}")
    if any(new.hostname != old.node.hostname for old, new in pairs):
        raise ValueError("update_many does not rename nodes; use update")


class Head(NamedTuple):
    """A node's record without its timeline, as a view of the store follows it: the JSON
    text of :meth:`pxeserver.model.Node.head_dict` (or of the whole record, which reads
    the same way), or None when the node is gone."""

    mac: MAC
    revision: int
    text: str | None


class NodeStore(Protocol):
    """What the registry needs from a store."""

    def get(self, mac: MAC) -> Versioned | None:
        """The node and its revision, or None if the store has no such node."""
        ...

    def scan(self) -> list[Versioned]:
        """Every node, in MAC order."""
        ...

    def create(self, node: Node, hostname_for: HostnameFor) -> Versioned:
        """Store a new node under the first free hostname ``hostname_for`` offers.

        Raises ``AlreadyExists`` if the MAC is taken (re-read it), ``HostnameTaken`` if no
        free hostname was found within ``MAX_HOSTNAME_PROBES`` tries.
        """
        ...

    def update(self, old: Versioned, node: Node) -> Versioned:
        """Replace ``old`` by ``node`` if the stored node is still at ``old.revision``.

        A hostname that differs from ``old``'s is reserved in the same step, and the old
        one freed.

        Raises ``Conflict`` if the node changed or vanished since, ``HostnameTaken`` if its
        new hostname belongs to another node.
        """
        ...

    def delete(self, mac: MAC, revision: int | None = None) -> bool:
        """Remove the node (and free its hostname). False if it was not there."""
        ...

    def get_many(self, macs: Sequence[MAC]) -> dict[MAC, Versioned]:
        """The nodes of ``macs`` that exist, read together (one round trip)."""
        ...

    def update_many(self, pairs: Sequence[tuple[Versioned, Node]]) -> list[Versioned]:
        """:meth:`update` for several nodes in one transaction: all are written, or none.

        Raises :class:`BatchConflict` (naming the nodes that changed, as they are now) if
        any node is no longer at the revision it was read at. Hostnames must not change
        here (ValueError): renaming is :meth:`update`'s, which reserves the new name.
        At most ``MAX_BATCH`` pairs.
        """
        ...

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers now."""
        ...

    def close(self) -> None: ...


Deliver = Callable[[list[Head], int], None]


class NodeFeed(Protocol):
    """What a view of the store follows (:mod:`pxeserver.nodes.view`): every node's head,
    then the changes, in the order the store made them. A cursor is where a reader is:
    SQLite's write counter, etcd's revision."""

    def snapshot(self) -> tuple[list[Head], int]:
        """Every node's head, and the cursor they bring the reader to."""
        ...

    def follow(self, cursor: int, deliver: Deliver, stopping: threading.Event) -> None:
        """Call ``deliver(heads, cursor)`` with the changes after ``cursor`` as they come:
        each changed node's head (None: deleted). A reader that looks less often than
        the changes come may get only each node's latest (SQLite: a node created and
        deleted in between comes as its deletion). Returns once ``stopping`` is set;
        raises ``StoreUnavailable`` when the store stops answering (or, etcd, when
        ``cursor`` was compacted away: read a new snapshot)."""
        ...
