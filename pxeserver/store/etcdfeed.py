"""The etcd store as an HTTP worker's view follows it (:class:`~pxeserver.store.NodeFeed`).

A snapshot is every record under ``<prefix>nodes/``, read page by page at one revision;
then etcd's watch from the next revision delivers each change as etcd commits it. Only
each record's head is kept (its timeline dropped here, on arrival). The watch is a gRPC
stream of its own on the endpoint the snapshot was read from, with the store's "require
a leader" metadata, so a member that loses its cluster ends it at once; gRPC's keepalive
ends it when the connection dies silently. When it ends, the view reads a snapshot again
(through the store's failover) and follows from there.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ..errors import InvalidInput, StoreUnavailable
from ..model import MAC
from . import Deliver, Head

# python-etcd3 and gRPC as the store imports them (protobuf set up first, see etcd.py)
from .etcd import PAGE, REQUIRE_LEADER, EtcdStore, etcd3, grpc

PUT = 0  # etcd's mvccpb.Event type (DELETE is 1)


def head_text(value: bytes) -> str:
    """A stored record's head: the record without its timeline."""
    record = json.loads(value)
    record.pop("events", None)
    record.pop("recent_ids", None)
    return json.dumps(record)


class EtcdFeed:
    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.start = f"{store.prefix}nodes/".encode()
        self.end = etcd3.utils.increment_last_byte(self.start)

    def _head(self, key: bytes, revision: int, value: bytes | None) -> Head | None:
        try:
            mac = MAC.parse(key[len(self.start) :].decode())
        except (InvalidInput, UnicodeDecodeError):
            return None  # not a node's key
        return Head(mac, revision, None if value is None else head_text(value))

    def snapshot(self) -> tuple[list[Head], int]:
        def read(client: Any) -> tuple[list[Head], int]:
            heads: list[Head] = []
            start, revision = self.start, 0
            while True:
                resp = client.get_range_response(start, self.end, sort_order="ascend",
                                                 limit=PAGE, revision=revision)  # fmt: skip
                revision = revision or resp.header.revision
                for kv in resp.kvs:
                    head = self._head(kv.key, kv.mod_revision, kv.value)
                    if head is not None:
                        heads.append(head)
                if not resp.more or not resp.kvs:
                    return heads, revision
                start = resp.kvs[-1].key + b"\0"

        return self.store._call("snapshot", read)

    def follow(self, cursor: int, deliver: Deliver, stopping: threading.Event) -> None:
        url = self.store.endpoints[self.store._current]
        client = self.store._client(url)
        create = etcd3.etcdrpc.WatchRequest(create_request=etcd3.etcdrpc.WatchCreateRequest(
            key=self.start, range_end=self.end, start_revision=cursor + 1))  # fmt: skip
        ended = threading.Event()
        calls: list[Any] = []

        def requests() -> Any:
            yield create
            while not (stopping.wait(0.25) or ended.is_set()):
                pass  # the stream stays open while this waits
            if calls and stopping.is_set():
                calls[0].cancel()

        call = etcd3.etcdrpc.WatchStub(client.channel).Watch(requests(), metadata=REQUIRE_LEADER)
        calls.append(call)
        try:
            for resp in call:
                if resp.compact_revision:
                    raise StoreUnavailable(f"etcd compacted the revisions after {cursor}")
                if resp.canceled:
                    raise StoreUnavailable(f"etcd ended the watch: {resp.cancel_reason}")
                heads = [h for h in (self._head(e.kv.key, e.kv.mod_revision,
                                                e.kv.value if e.type == PUT else None)
                                     for e in resp.events) if h is not None]  # fmt: skip
                if heads:
                    cursor = resp.header.revision
                    deliver(heads, cursor)
        except grpc.RpcError as exc:
            if stopping.is_set():
                return
            raise StoreUnavailable(f"etcd watch on {url}: {exc.code().name}: "
                                   f"{exc.details()}") from exc  # fmt: skip
        finally:
            ended.set()
        if not stopping.is_set():
            raise StoreUnavailable(f"etcd watch on {url} ended")
