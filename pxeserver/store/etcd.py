"""The etcd store: one JSON document per node at ``<prefix>nodes/<mac>``, through python-etcd3.

Layout under the prefix (default ``/pxeserver/``), all plain JSON or text so that
``etcdctl get --prefix /pxeserver/nodes/`` shows the registry as it is::

    nodes/<mac>            the node's record (the same document the SQLite store keeps)
    hostnames/<hostname>   the MAC that owns the hostname; reserved in the same transaction
    counters/hostname      a hint where to start looking for the next free hostname index

Every write is a transaction that compares the node's ``mod_revision`` (or that the key
does not exist yet), so concurrent writers from several pxeserver processes never lose an
update. python-etcd3 0.12 talks to one endpoint and waits forever by default: every call
here has the store deadline, and the store fails over to the next configured endpoint
itself when one refuses or times out, and asks again while the cluster elects a leader
(see :meth:`EtcdStore._call`). A write whose answer was lost (the deadline passed, the
leader died) may have been applied; retrying it is safe because of the revision compare.

With ``https://`` endpoints the store speaks TLS: ``ca`` is the CA certificate that signed
etcd's server certificates, and ``cert`` and ``key`` the client certificate etcd's
``--client-cert-auth`` asks for (the settings checked the files at load). A handshake
that fails is a failure of that endpoint like any other, with a sentence that names the
file to fix (:mod:`pxeserver.store.etcd_tls`). Endpoints are shown (logs, errors) only
through :func:`pxeserver.logs.redact`: a user and password in a URL never show.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..errors import AlreadyExists, Conflict, HostnameTaken, StoreUnavailable
from ..logs import redact
from ..model import MAC, Node, Versioned
from . import MAX_BATCH, MAX_HOSTNAME_PROBES, BatchConflict, BatchTooLarge, HostnameFor, check_batch
from .etcd_tls import ClientTls, handshake_failed

# python-etcd3's generated protobuf modules import only with the pure-Python protobuf
# runtime on protobuf >= 4; this must be set before protobuf is first imported.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
# gRPC's C core writes its own lines to stderr (three for every TLS handshake etcd
# refuses, again at each reconnect), outside the log format; every failure reaches the
# log through this store, translated, instead.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import etcd3
import etcd3.exceptions
import etcd3.utils
import grpc

log = logging.getLogger(__name__)

T = TypeVar("T")
PAGE = 500
# What one update_many may carry (etcd's --max-request-bytes is 1.5 MiB by default).
MAX_TXN_BYTES = 1 << 20
# A page of 500 full node records can exceed gRPC's default 4 MiB message limit.
# Reconnect quickly after an outage: gRPC's default backoff grows to two minutes, which
# would keep the store "down" long after etcd is back. Not "grpc.min_reconnect_backoff_ms":
# gRPC takes it as the time a connection attempt may take, and at 200 ms a loaded
# machine's handshake with a healthy etcd failed ("timed out before receiving SETTINGS
# frame"); every call has the store deadline anyway.
# Keepalive pings every 10 s (etcd refuses them more often than every 5 s) end a call on a
# connection that died without a word, such as an HTTP worker's watch (etcdfeed.py).
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]
# Sent with every request: a member that has no leader (cut off from the others, or the
# cluster is electing) answers "etcdserver: no leader" at once instead of holding the
# request until the deadline, so the store moves on to a member that can answer. (etcd's
# gRPC interceptor honours it; Go's clientv3 sets it with WithRequireLeader.)
REQUIRE_LEADER = (("hasleader", "true"),)
_FAILURES = (etcd3.exceptions.Etcd3Exception, grpc.RpcError, ValueError)
# What etcd answers while its cluster has no leader or is changing it (gRPC UNAVAILABLE with
# these messages): worth asking again, on any member, once the election is over.
_ELECTING = (
    "etcdserver: leader changed",
    "etcdserver: no leader",
    "etcdserver: request timed out",
    "etcdserver: too many requests",
    "etcdserver: not capable",
    "raft proposal dropped",
)


# Answers about the request itself, which every member would give alike (a record too
# large, a full database, a malformed transaction): asking the next member is no use.
_REFUSED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
)


def _classify(exc: Exception, tls: bool = False) -> tuple[str, str]:
    """What kind of failure ``exc`` is, and its message.

    Kinds: ``electing`` (the member answered that the cluster is between leaders),
    ``deadline`` (no answer within the deadline: the request may or may not have been
    applied), ``tls`` (a store with ``tls``: the connection's TLS handshake failed),
    ``unreachable`` (no connection), ``refused`` (etcd refused the request itself; see
    ``_REFUSED``), ``error`` (anything else).
    python-etcd3 replaces gRPC errors by its own exceptions without their message; the
    gRPC error is the exception's context.
    """
    rpc = exc if isinstance(exc, grpc.RpcError) else exc.__context__
    if not isinstance(rpc, grpc.RpcError):
        return "error", str(exc) or type(exc).__name__
    code, detail = rpc.code(), rpc.details() or ""
    if any(detail.startswith(m) for m in _ELECTING):
        return "electing", detail
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return "deadline", detail
    if tls and handshake_failed(detail):
        return "tls", detail
    if code is grpc.StatusCode.UNAVAILABLE:
        return "unreachable", detail
    if code in _REFUSED:
        return "refused", detail
    return "error", f"{code.name}: {detail}"


def _endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 2379


class EtcdStore:
    def __init__(
        self,
        endpoints: tuple[str, ...],
        prefix: str = "/pxeserver/",
        timeout: float = 3.0,
        *,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
    ):
        if not endpoints:
            raise ValueError("the etcd store needs at least one endpoint")
        schemes = {urlsplit(url).scheme for url in endpoints}
        if (ca is not None) != (schemes == {"https"}) or (cert is None) != (key is None):
            # The settings refuse these with a sentence; this guards other callers.
            shown = redact(",".join(endpoints))
            raise ValueError(f"TLS needs https:// endpoints and a CA, all or none: {shown}")
        self.endpoints = tuple(endpoints)
        self.prefix = prefix
        self.timeout = timeout
        self.tls = ClientTls(ca, cert, key) if ca is not None else None
        self._clients: dict[str, Any] = {}
        self._current = 0
        self._closed = False
        self._lock = threading.Lock()
        # Failed attempts by kind (see _classify) and calls that succeeded on a later
        # endpoint: what the fault tests report.
        self.stats: collections.Counter[str] = collections.Counter()
        # Per thread: whether its last call succeeded only after a failed attempt, so an
        # earlier attempt may have been applied without its answer arriving.
        self._last = threading.local()

    def __repr__(self) -> str:
        tls = ", TLS" if self.tls else ""
        return f"EtcdStore({redact(','.join(self.endpoints))}{tls}, prefix={self.prefix!r})"

    # -- keys ---------------------------------------------------------------------------

    def _node_key(self, mac: MAC) -> str:
        return f"{self.prefix}nodes/{mac.value}"

    def _host_key(self, hostname: str) -> str:
        return f"{self.prefix}hostnames/{hostname}"

    @property
    def _counter_key(self) -> str:
        return f"{self.prefix}counters/hostname"

    # -- connection and failover --------------------------------------------------------

    def _client(self, url: str) -> Any:
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the etcd store is closed")
            client = self._clients.get(url)
            if client is None:
                host, port = _endpoint(url)
                client = etcd3.client(
                    host=host,
                    port=port,
                    timeout=self.timeout,
                    grpc_options=GRPC_OPTIONS,
                    **(self.tls.arguments() if self.tls else {}),
                )
                client.metadata = REQUIRE_LEADER  # python-etcd3 sends it with every call
                self._clients[url] = client
            return client

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)`` against the current endpoint, failing over to the others.

        Every attempt has the store deadline. A failed attempt moves on to the next
        endpoint at once, unless etcd refused the request itself (every member would).
        When every endpoint has failed the store is unavailable, except that answers
        meaning "the cluster is electing a leader" are retried, round after round with a
        short backoff, until the store deadline has passed since the call began (an
        election takes about two election timeouts). Worst case, every endpoint hangs:
        one deadline per endpoint.

        Retrying is safe: every write compares revisions, so a write that did land before
        its answer was lost shows up as a conflict, and the registry's event ids make the
        retry a no-op.

        A failed endpoint's channel is kept, not closed: other threads may be in calls on
        it, and closing it would fail them with "Channel closed!". gRPC reconnects the
        channel itself (with the short backoff of ``GRPC_OPTIONS``).
        """
        n = len(self.endpoints)
        start = self._current
        give_up_retrying = time.monotonic() + self.timeout
        errors: list[str] = []
        tried: set[int] = set()
        electing = False
        for attempt in itertools.count():
            i = (start + attempt) % n
            if i in tried:  # a new round: only while the cluster is settling
                if not electing or time.monotonic() >= give_up_retrying:
                    break
                time.sleep(min(0.05 * 2 ** (attempt // n - 1), 0.5))
            url = self.endpoints[i]
            shown = redact(url)
            try:
                result = fn(self._client(url))
            except _FAILURES as exc:
                kind, detail = _classify(exc, tls=self.tls is not None)
                self.stats[kind] += 1
                if kind == "refused":
                    raise StoreUnavailable(f"etcd {what}: {shown} refused it: {detail}") from exc
                if kind == "tls" and self.tls:
                    detail = self.tls.failure(detail)
                electing = electing or kind == "electing"
                tried.add(i)
                errors.append(f"{shown}: {detail}")
                if self._current == i:
                    self._current = (i + 1) % n  # steer the other threads away too
                if n > 1:
                    log.warning("etcd %s failed on %s (%s); trying the next endpoint",
                                what, shown, detail)  # fmt: skip
                continue
            self._last.retried = attempt > 0
            if attempt:
                self.stats["failed_over"] += 1
            if i != self._current:
                log.warning("etcd store now uses %s", shown)
                self._current = i
            return result
        raise StoreUnavailable(f"etcd {what}: no endpoint answered ({'; '.join(errors[-n:])})")

    # -- reads --------------------------------------------------------------------------

    def get(self, mac: MAC) -> Versioned | None:
        value, meta = self._call("get", lambda c: c.get(self._node_key(mac)))
        return None if value is None else _versioned(value, meta)

    def _pages(self, client: Any) -> Iterator[tuple[bytes, Any]]:
        start = f"{self.prefix}nodes/"
        end = etcd3.utils.increment_last_byte(start.encode())
        while True:
            resp = client.get_range_response(start, end, sort_order="ascend", limit=PAGE)
            for kv in resp.kvs:
                yield kv.value, kv
            if not resp.more or not resp.kvs:
                return
            start = resp.kvs[-1].key + b"\0"

    def scan(self) -> list[Versioned]:
        rows = self._call("scan", lambda c: list(self._pages(c)))
        return [Versioned(Node.from_dict(json.loads(v)), kv.mod_revision) for v, kv in rows]

    # -- writes -------------------------------------------------------------------------

    @staticmethod
    def _put_revision(responses: list[Any]) -> int:
        return int(responses[0].response_put.header.revision)

    def create(self, node: Node, hostname_for: HostnameFor) -> Versioned:
        key = self._node_key(node.mac)
        index = int(self._call("get", lambda c: c.get(self._counter_key))[0] or 0)
        for _ in range(MAX_HOSTNAME_PROBES):
            index += 1
            candidate = node.replace(hostname=hostname_for(index))
            host_key = self._host_key(candidate.hostname)
            doc = candidate.to_json()[0]

            def txn(
                c: Any, host_key: str = host_key, doc: str = doc, index: int = index
            ) -> tuple[bool, list[Any]]:
                t = c.transactions
                return c.transaction(
                    compare=[t.version(key) == 0, t.version(host_key) == 0],
                    success=[
                        t.put(key, doc),
                        t.put(host_key, node.mac.value),
                        t.put(self._counter_key, str(index)),
                    ],
                    failure=[t.get(key), t.get(host_key), t.get(self._counter_key)],
                )

            ok, responses = self._call("create", txn)
            if ok:
                return Versioned(candidate, self._put_revision(responses))
            if responses[0]:
                raise AlreadyExists(str(node.mac))
            # Taken (a racing create, a rename): probe on from the counter as it is now.
            index = max(index, int(responses[2][0][0] or 0) if responses[2] else 0)
        raise HostnameTaken(f"no free hostname for {node.mac} in {MAX_HOSTNAME_PROBES} tries")

    def update(self, old: Versioned, node: Node) -> Versioned:
        key = self._node_key(node.mac)
        if not node.hostname:
            raise ValueError("a node must keep a hostname")

        def txn(c: Any) -> tuple[bool, list[Any]]:
            t = c.transactions
            compare = [t.mod(key) == old.revision]
            success = [t.put(key, node.to_json()[0])]
            failure = [t.get(key)]
            if node.hostname != old.node.hostname:
                host_key = self._host_key(node.hostname)
                compare.append(t.version(host_key) == 0)
                success.append(t.put(host_key, node.mac.value))
                if old.node.hostname:
                    success.append(t.delete(self._host_key(old.node.hostname)))
            return c.transaction(compare=compare, success=success, failure=failure)

        ok, responses = self._call("update", txn)
        if ok:
            return Versioned(node, self._put_revision(responses))
        current = responses[0] if responses else []
        if current and current[0][1].mod_revision == old.revision:
            raise HostnameTaken(f"{node.hostname} belongs to another node")
        raise Conflict(f"{node.mac} changed since revision {old.revision}")

    def get_many(self, macs: Sequence[MAC]) -> dict[MAC, Versioned]:
        found: dict[MAC, Versioned] = {}
        for i in range(0, len(macs), MAX_BATCH * 2):
            keys = [self._node_key(m) for m in macs[i : i + MAX_BATCH * 2]]

            def txn(c: Any, keys: list[str] = keys) -> tuple[bool, list[Any]]:
                t = c.transactions
                return c.transaction(compare=[], success=[t.get(k) for k in keys], failure=[])

            _, responses = self._call("get", txn)
            for value, meta in (row for rows in responses for row in rows):
                versioned = _versioned(value, meta)
                found[versioned.node.mac] = versioned
        return found

    def update_many(self, pairs: Sequence[tuple[Versioned, Node]]) -> list[Versioned]:
        check_batch(pairs)
        docs = [(self._node_key(new.mac), new.to_json()[0]) for _, new in pairs]
        if len(pairs) > 1 and sum(len(doc) for _, doc in docs) > MAX_TXN_BYTES:
            raise BatchTooLarge(f"{len(pairs)} records are more than {MAX_TXN_BYTES} bytes")

        def txn(c: Any) -> tuple[bool, list[Any]]:
            t = c.transactions
            return c.transaction(
                compare=[t.mod(key) == old.revision for (old, _), (key, _) in zip(pairs, docs)],
                success=[t.put(key, doc) for key, doc in docs],
                failure=[t.get(key) for key, _ in docs],
            )

        ok, responses = self._call("update", txn)
        if ok:
            revision = self._put_revision(responses)
            return [Versioned(new, revision) for _, new in pairs]
        current = [_versioned(*rows[0]) if rows else None for rows in responses]
        raise BatchConflict({new.mac: v for (old, new), v in zip(pairs, current)
                             if v is None or v.revision != old.revision})  # fmt: skip

    def delete(self, mac: MAC, revision: int | None = None) -> bool:
        key = self._node_key(mac)
        answer_lost = False
        while True:
            current = self.get(mac)
            if current is None:
                # Gone. If one of our deletes was retried, the first attempt may be what
                # removed it (its answer lost on the way): it was there, and is not now.
                return answer_lost
            if revision is not None and current.revision != revision:
                raise Conflict(f"{mac} changed since revision {revision}")
            rev = current.revision
            host_key = self._host_key(current.node.hostname)

            def txn(c: Any, rev: int = rev, host_key: str = host_key) -> tuple[bool, list[Any]]:
                t = c.transactions
                return c.transaction(
                    compare=[t.mod(key) == rev, t.value(host_key) == mac.value],
                    success=[t.delete(key), t.delete(host_key)],
                    failure=[],
                )

            def plain(c: Any, rev: int = rev) -> tuple[bool, list[Any]]:
                t = c.transactions
                return c.transaction(
                    compare=[t.mod(key) == rev], success=[t.delete(key)], failure=[]
                )

            ok, _ = self._call("delete", txn)
            answer_lost = answer_lost or self._last.retried
            if not ok:
                # The hostname key may be missing (written by an older version): delete alone.
                ok, _ = self._call("delete", plain)
                answer_lost = answer_lost or self._last.retried
            if ok:
                return True
            if revision is not None and not answer_lost:
                raise Conflict(f"{mac} changed since revision {revision}")
            # Otherwise look again: changed by someone else, or deleted by our lost attempt.

    def ping(self) -> None:
        self._call("status", lambda c: c.status())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for client in self._clients.values():
                try:
                    client.close()
                except Exception:
                    log.debug("closing an etcd client failed", exc_info=True)
            self._clients.clear()


def _versioned(value: bytes, meta: Any) -> Versioned:
    """A node as etcd holds it, at the revision it was last written."""
    return Versioned(Node.from_dict(json.loads(value)), meta.mod_revision)
