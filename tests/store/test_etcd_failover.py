"""The etcd store's failover and deadlines, and writes whose answer was lost.

Against a real etcd (the session's single member) and, for the endpoints that fail,
real sockets on loopback: a port nobody listens on (refused), a listener that accepts
and never answers, and an etcd member frozen with SIGSTOP (a hung member). The 3-member
cluster under kill -9 is ``test_etcd_cluster.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeserver.errors import AlreadyExists, Conflict, StoreUnavailable
from pxeserver.model import MAC, EventKind, Node, Versioned
from pxeserver.nodes.registry import Change, Registry
from pxeserver.store import HostnameFor
from pxeserver.store.etcd import EtcdStore

from ..support.etcd import EtcdMember, etcd_prefix
from ..support.net import free_port, wait_for

MAC1 = MAC.parse("52:54:00:fa:11:01")


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP listener that accepts connections and never says a word: a hung member."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    t.join()
    for c in held:
        c.close()
    listener.close()


def refused_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


def stopped(member: EtcdMember) -> bool:
    """Whether the member's process is stopped now (SIGSTOP takes effect asynchronously)."""
    assert member.proc is not None
    stat = Path(f"/proc/{member.proc.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.etcd
def test_a_frozen_member_costs_one_deadline_then_fails_over(etcd: Any, tmp_path: Path) -> None:
    """A real etcd stopped with SIGSTOP mid-session: the connection is up, nothing answers."""
    frozen = EtcdMember("frozen", tmp_path / "frozen", tmp_path)
    frozen.start()
    store = EtcdStore((frozen.client_url, etcd.client_url), etcd_prefix(), timeout=1)
    try:
        assert store.get(MAC1) is None  # connected to the first member
        assert not store.stats
        assert frozen.proc is not None
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        wait_for(lambda: stopped(frozen), 10, "etcd to stop on SIGSTOP")
        start = time.monotonic()
        assert store.get(MAC1) is None
        took = time.monotonic() - start
        # The deadline, though gRPC may call it a lost connection first on a loaded machine.
        assert store.stats["failed_over"] == 1, store.stats
        assert store.stats["deadline"] + store.stats["unreachable"] == 1, store.stats
        assert took < 10, f"a call on a frozen member took {took:.1f} s; the deadline is 1 s"
        os.kill(frozen.proc.pid, signal.SIGCONT)
    finally:
        store.close()
        frozen.kill()


@pytest.mark.etcd
def test_a_refused_endpoint_fails_over_to_the_next(etcd: Any) -> None:
    store = EtcdStore((refused_endpoint(), etcd.client_url), etcd_prefix(), timeout=2)
    try:
        assert store.get(MAC1) is None
        assert store.stats["unreachable"] == 1 and store.stats["failed_over"] == 1
        # The store now starts with the endpoint that answered.
        store.get(MAC1)
        assert store.stats["unreachable"] == 1
    finally:
        store.close()


@pytest.mark.etcd
def test_a_hung_endpoint_costs_one_deadline_then_fails_over(
    etcd: Any, silent_endpoint: str
) -> None:
    store = EtcdStore((silent_endpoint, etcd.client_url), etcd_prefix(), timeout=1)
    try:
        start = time.monotonic()
        assert store.get(MAC1) is None
        took = time.monotonic() - start
        # gRPC reports a handshake that never completes as a failed connection or as the
        # deadline, depending on which of its timers fires first.
        assert store.stats["failed_over"] == 1, store.stats
        assert store.stats["deadline"] + store.stats["unreachable"] == 1, store.stats
        # The issue asks for a deadline on every call; a generous bound for a loaded machine.
        assert took < 10, f"a call on a hung endpoint took {took:.1f} s; the deadline is 1 s"
    finally:
        store.close()


@pytest.mark.etcd
def test_every_endpoint_down_is_store_unavailable(silent_endpoint: str) -> None:
    store = EtcdStore((refused_endpoint(), silent_endpoint), etcd_prefix(), timeout=1)
    try:
        with pytest.raises(StoreUnavailable) as err:
            store.get(MAC1)
        text = str(err.value)
        assert "no endpoint answered" in text and silent_endpoint in text
        assert store.stats["unreachable"] + store.stats["deadline"] == 2, store.stats
    finally:
        store.close()


@pytest.mark.etcd
def test_a_failed_call_does_not_close_the_channel_under_other_threads(etcd: Any) -> None:
    """One thread's failing call must not fail the calls other threads have in flight on
    the same endpoint (an earlier version closed the channel: "Channel closed!")."""
    store = EtcdStore((etcd.client_url,), etcd_prefix(), timeout=3)
    stop = threading.Event()
    failures: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                store.get(MAC1)
                reads[0] += 1
            except StoreUnavailable as exc:
                failures.append(str(exc))

    def bad_txn(c: Any) -> Any:
        t = c.transactions
        key = store.prefix + "dup"
        # etcd refuses a transaction that writes one key twice (InvalidArgument).
        return c.transaction(compare=[], success=[t.put(key, "a"), t.put(key, "b")], failure=[])

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        refusals: list[str] = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            with pytest.raises(StoreUnavailable) as err:
                store._call("bad transaction", bad_txn)
            refusals.append(str(err.value))
    finally:
        stop.set()
        for t in threads:
            t.join()
        store.close()
    assert len(refusals) > 10 and reads[0] > 10
    assert not failures, failures[:3]
    assert all("duplicate key" in r for r in refusals), refusals[:3]


class LostAnswers:
    """A real store whose writes land but whose answers are lost, once per key.

    What the etcd store's caller sees after an ambiguous write: the first attempt was
    applied, its answer never came, the store retried on another endpoint and the
    retry's revision compare failed — ``Conflict`` for an update, ``AlreadyExists`` for
    a create. The registry must then find its own event and stop.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def create(self, node: Node, hostname_for: HostnameFor) -> Versioned:
        self.store.create(node, hostname_for)
        self.lost += 1
        raise AlreadyExists(str(node.mac))

    def update(self, old: Versioned, node: Node) -> Versioned:
        self.store.update(old, node)
        self.lost += 1
        raise Conflict(f"{node.mac} changed since revision {old.revision}")


def test_a_write_whose_answer_was_lost_is_applied_once(store: Any) -> None:
    """Both backends (the ``store`` fixture); the etcd one is where answers get lost."""
    lossy = LostAnswers(store)
    registry = Registry(lossy)
    for kind in (EventKind.DHCP, EventKind.IPXE, EventKind.CLOUD_CONFIG):
        # No event id from the caller: as the HTTP handlers call it.
        node = registry.apply(MAC1, Change(kind, f"{kind.value} once"))
    assert lossy.lost == 3
    assert [e.kind for e in node.events] == [EventKind.DHCP, EventKind.IPXE, EventKind.CLOUD_CONFIG]
    assert node.boot_count == 0
    stored = store.get(MAC1).node
    assert [e.detail for e in stored.events] == ["dhcp once", "ipxe once", "cloud-config once"]


@pytest.mark.etcd
def test_a_request_etcd_refuses_is_not_tried_on_every_member(etcd: Any) -> None:
    """etcd refusing the request itself (here a transaction writing one key twice; in
    life a record past etcd's size limit, a full database) is said at once, by name."""
    store = EtcdStore((etcd.client_url, etcd.client_url), etcd_prefix(), timeout=2)

    def bad_txn(c: Any) -> Any:
        t = c.transactions
        key = store.prefix + "dup"
        return c.transaction(compare=[], success=[t.put(key, "a"), t.put(key, "b")], failure=[])

    try:
        with pytest.raises(StoreUnavailable, match="refused it: etcdserver: duplicate key"):
            store._call("bad transaction", bad_txn)
        assert store.stats == {"refused": 1}
    finally:
        store.close()


class AnswerLostOnce:
    """A real python-etcd3 client whose next transaction is applied by etcd but whose
    answer never arrives (raised as the deadline python-etcd3 would report).

    A stand-in, because a lost answer cannot be produced on demand with the real thing;
    the cluster test sees it happen (its ``Witness`` counts the writes that landed)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def transaction(self, **kw: Any) -> Any:
        result = self.client.transaction(**kw)
        if self.armed:
            # Imported here: python-etcd3 must come after pxeserver.store.etcd has set
            # up protobuf (see there).
            import etcd3.exceptions

            self.armed = False
            raise etcd3.exceptions.ConnectionTimeoutError()
        return result


@pytest.mark.etcd
@pytest.mark.parametrize("revision", [False, True])
def test_a_delete_whose_answer_was_lost_still_says_it_deleted(etcd: Any, revision: bool) -> None:
    store = EtcdStore((etcd.client_url, etcd.client_url), etcd_prefix(), timeout=2)
    try:
        created = store.create(Node(mac=MAC1), lambda i: f"node-{i:03d}")
        client = store._client(etcd.client_url)
        store._clients[etcd.client_url] = AnswerLostOnce(client)
        assert store.delete(MAC1, created.revision if revision else None) is True
        assert store.stats["failed_over"] == 1, store.stats
        assert store.get(MAC1) is None
        assert store.delete(MAC1) is False
    finally:
        store.close()
