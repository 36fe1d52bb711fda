"""Fake stores for failure paths. The real backends are tested against real SQLite and etcd."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

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

    def get_many(self, macs: Sequence[MAC]) -> dict[MAC, Versioned]:
        raise StoreUnavailable(self.reason)

    def update_many(self, pairs: Sequence[tuple[Versioned, Node]]) -> list[Versioned]:
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

    def get_many(self, macs: Sequence[MAC]) -> dict[MAC, Versioned]:
        return self._do(lambda: self.inner.get_many(macs))

    def update_many(self, pairs: Sequence[tuple[Versioned, Node]]) -> list[Versioned]:
        return self._do(lambda: self.inner.update_many(pairs))

    def ping(self) -> None:
        self._do(self.inner.ping)

    def close(self) -> None:
        self.inner.close()


class CountingStore:
    """A real store that counts every call of the store interface (NodeStore) made to it,
    by method: what proves that a path makes no store call. What a view's feed asks of
    the store beside that interface (SQLite's change counter, etcd's watch) is not
    counted: it runs in the view's own thread, never on a request's path."""

    COUNTED = frozenset({"get", "scan", "create", "update", "delete", "get_many",
                         "update_many", "ping"})  # fmt: skip

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.COUNTED:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted

    def __repr__(self) -> str:
        return f"CountingStore({self.inner!r})"
