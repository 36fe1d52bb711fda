"""Fake stores, as matchbox has them, for the boot policy's tests and the failure paths.

- :class:`FixedStore`: the nodes it was given, in memory; it keeps what is written, with
  compare-and-swap and unique hostnames as the real backends do (it runs the same store
  contract suite, tests/store/test_contract.py);
- :class:`EmptyStore`: knows no node and keeps nothing it is given;
- :class:`BrokenStore`: every call fails as an unreachable etcd would;
- :class:`CountingStore`: wraps any store and counts the calls by method name, so that a
  test can say "no store call on this path";
- :class:`SwitchedStore`: a real SQLite store that answers only while ``up``.

The real backends are tested against real SQLite and etcd.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pxeserver.errors import AlreadyExists, Conflict, HostnameTaken, StoreUnavailable
from pxeserver.model import MAC, Node, Versioned
from pxeserver.store import (
    MAX_HOSTNAME_PROBES,
    BatchConflict,
    HostnameFor,
    NodeStore,
    check_batch,
)
from pxeserver.store.sqlite import SQLiteStore

T = TypeVar("T")


class FixedStore:
    """The given nodes (each at revision 1), in memory, and whatever is written after."""

    def __init__(self, nodes: Iterable[Node] = ()) -> None:
        self._nodes: dict[MAC, Versioned] = {}
        self._counter = 0  # the hostname counter, as the real stores keep one
        self._lock = threading.Lock()
        for node in nodes:
            self._nodes[node.mac] = Versioned(node, 1)

    def _owner(self, hostname: str) -> MAC | None:
        return next((m for m, v in self._nodes.items() if v.node.hostname == hostname), None)

    def get(self, mac: MAC) -> Versioned | None:
        with self._lock:
            return self._nodes.get(mac)

    def scan(self) -> list[Versioned]:
        with self._lock:
            return [self._nodes[mac] for mac in sorted(self._nodes)]

    def create(self, node: Node, hostname_for: HostnameFor) -> Versioned:
        with self._lock:
            if node.mac in self._nodes:
                raise AlreadyExists(str(node.mac))
            for _ in range(MAX_HOSTNAME_PROBES):
                self._counter += 1
                hostname = hostname_for(self._counter)
                if self._owner(hostname) is None:
                    break
            else:
                raise HostnameTaken(f"no free hostname for {node.mac}")
            created = Versioned(node.replace(hostname=hostname), 1)
            self._nodes[node.mac] = created
            return created

    def update(self, old: Versioned, node: Node) -> Versioned:
        with self._lock:
            owner = self._owner(node.hostname)
            if owner is not None and owner != node.mac:
                raise HostnameTaken(f"{node.hostname} belongs to {owner}")
            current = self._nodes.get(node.mac)
            if current is None or current.revision != old.revision:
                raise Conflict(f"{node.mac} changed since revision {old.revision}")
            updated = Versioned(node, old.revision + 1)
            self._nodes[node.mac] = updated
            return updated

    def delete(self, mac: MAC, revision: int | None = None) -> bool:
        with self._lock:
            current = self._nodes.get(mac)
            if current is None:
                return False
            if revision is not None and current.revision != revision:
                raise Conflict(f"{mac} changed since revision {revision}")
            del self._nodes[mac]
            return True

    def get_many(self, macs: Sequence[MAC]) -> dict[MAC, Versioned]:
        with self._lock:
            return {m: self._nodes[m] for m in macs if m in self._nodes}

    def update_many(self, pairs: Sequence[tuple[Versioned, Node]]) -> list[Versioned]:
        check_batch(pairs)
        with self._lock:
            changed: dict[MAC, Versioned | None] = {}
            for old, new in pairs:
                current = self._nodes.get(new.mac)
                if current is None or current.revision != old.revision:
                    changed[new.mac] = current
            if changed:
                raise BatchConflict(changed)
            written = [Versioned(new, old.revision + 1) for old, new in pairs]
            self._nodes.update({v.node.mac: v for v in written})
            return written

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


class EmptyStore:
    """Knows no node: reads find nothing; writes are accepted and forgotten."""

    def get(self, mac: MAC) -> Versioned | None:
        return None

    def scan(self) -> list[Versioned]:
        return []

    def create(self, node: Node, hostname_for: HostnameFor) -> Versioned:
        return Versioned(node.replace(hostname=hostname_for(1)), 1)

    def update(self, old: Versioned, node: Node) -> Versioned:
        raise Conflict(f"{node.mac} is not in the store")

    def delete(self, mac: MAC, revision: int | None = None) -> bool:
        return False

    def get_many(self, macs: Sequence[MAC]) -> dict[MAC, Versioned]:
        return {}

    def update_many(self, pairs: Sequence[tuple[Versioned, Node]]) -> list[Versioned]:
        raise BatchConflict({new.mac: None for _, new in pairs})

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


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


class CountingStore:
    """Any store, with its calls counted by method name (``calls["get"]``,
    ``calls.total()``) and by the name of the thread that made them (``callers["dhcp-dhcp"]``:
    which service asked). A call counts whether it succeeds or raises."""

    def __init__(self, inner: NodeStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.callers: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self.calls[name] += 1
            self.callers[threading.current_thread().name] += 1
        return fn(*args)

    def writes(self) -> int:
        """Calls that would change the store: create, update, delete, update_many."""
        return sum(self.calls[k] for k in ("create", "update", "delete", "update_many"))

    def get(self, mac: MAC) -> Versioned | None:
        return self._count("get", self.inner.get, mac)

    def scan(self) -> list[Versioned]:
        return self._count("scan", self.inner.scan)

    def create(self, node: Node, hostname_for: HostnameFor) -> Versioned:
        return self._count("create", self.inner.create, node, hostname_for)

    def update(self, old: Versioned, node: Node) -> Versioned:
        return self._count("update", self.inner.update, old, node)

    def delete(self, mac: MAC, revision: int | None = None) -> bool:
        return self._count("delete", self.inner.delete, mac, revision)

    def get_many(self, macs: Sequence[MAC]) -> dict[MAC, Versioned]:
        return self._count("get_many", self.inner.get_many, macs)

    def update_many(self, pairs: Sequence[tuple[Versioned, Node]]) -> list[Versioned]:
        return self._count("update_many", self.inner.update_many, pairs)

    def ping(self) -> None:
        self._count("ping", self.inner.ping)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        """What a view's feed asks of the store beside the NodeStore interface (SQLite's
        change counter, etcd's watch): not counted, it runs in the view's own thread,
        never on a request's path."""
        return getattr(self.inner, name)


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
