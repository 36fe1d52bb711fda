"""Fake stores for failure paths. The real backends are tested against real SQLite and etcd."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pxeserver.errors import StoreUnavailable
from pxeserver.model import MAC, Node, Versioned
from pxeserver.store import HostnameFor
from pxeserver.store.sqlite import SQLiteStore

T = TypeVar("T")


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


class SwitchedStore:
    """A real SQLite store that answers only while ``up``: a stand-in for an etcd that
    goes away, so that every ordering case can be set up exactly. Counts the calls."""

    def __init__(self, path: Path) -> None:
        self.inner = SQLiteStore(path)
        self.up = True
        self.calls = 0

    def _do(self, fn: Callable[[], T]) -> T:
        self.calls += 1
        if not self.up:
            raise StoreUnavailable("switched off")
        return fn()

    def get(self, mac: MAC) -> Versioned | None:
        return self._do(lambda: self.inner.get(mac))

    def scan(self) -> list[Versioned]:
        return self._do(self.inner.scan)

    def create(self, node: Node, hostname_for: HostnameFor) -> Versioned:
        return self._do(lambda: self.inner.create(node, hostname_for))

    def update(self, old: Versioned, node: Node) -> Versioned:
        return self._do(lambda: self.inner.update(old, node))

    def delete(self, mac: MAC, revision: int | None = None) -> bool:
        return self._do(lambda: self.inner.delete(mac, revision))

    def ping(self) -> None:
        self._do(self.inner.ping)

    def close(self) -> None:
        self.inner.close()
