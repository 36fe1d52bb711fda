"""Fake stores for failure paths. The real backends are tested against real SQLite and etcd."""

from __future__ import annotations

from pxeserver.errors import StoreUnavailable
from pxeserver.model import MAC, Node, Versioned
from pxeserver.store import HostnameFor


class BrokenStore:
    """Every call fails as an unreachable etcd would."""

    def __init__(self, reason: str = "etcd at http://127.0.0.1:1: connection refused") -> None:
        self.reason = reason

    def get(self, mac: MAC) -> Versioned | None:
        raise StoreUnavailable(self.reason)

    def scan(self) -> list[Versioned]:
        raise StoreUnavailable(self.reason)

    def create(self, node: Node, hostname_for: HostnameFor) -> Versioned:
        raise StoreUnavailable(self.reason)

    def update(self, old: Versioned, node: Node) -> Versioned:
        raise StoreUnavailable(self.reason)

    def delete(self, mac: MAC, revision: int | None = None) -> bool:
        raise StoreUnavailable(self.reason)

    def ping(self) -> None:
        raise StoreUnavailable(self.reason)

    def close(self) -> None:
        pass
