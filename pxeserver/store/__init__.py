"""Node stores: one interface, two backends (SQLite embedded, etcd).

Every change to a node is a compare-and-swap on the revision it was read at, so two
pxeserver processes on one store never lose each other's writes. Hostnames are unique
across the store: the backend reserves a hostname in the same atomic step that creates or
renames a node. Backends raise only :mod:`pxeserver.errors` exceptions:
``StoreUnavailable`` when the store cannot answer within its deadline, ``Conflict`` when a
compare-and-swap lost, ``HostnameTaken``, ``AlreadyExists``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..model import MAC, Node, Versioned

# Given a counter value (1, 2, …), the hostname to try; the store probes forward until
# it finds one that is free.
HostnameFor = Callable[[int], str]

MAX_HOSTNAME_PROBES = 1000


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

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers now."""
        ...

    def close(self) -> None: ...
