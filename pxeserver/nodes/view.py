"""An HTTP worker's view of the registry, in memory: what it answers known machines from.

A known machine's ``/ipxe`` and ``/cloud-config`` are made from its record without its
timeline (its *head*: hostname, facts, labels, assigned profile, token, what its disk
holds), which changes seldom. Each HTTP worker keeps every node's head in memory and
follows the store's changes (:class:`~pxeserver.store.NodeFeed`: SQLite's change counter,
asked every 20 ms; etcd's watch), so serving a known machine makes no store call. The
boot step is noted and written behind the answer (:mod:`pxeserver.nodes.steps`).

How fresh it is: a change committed by another process or another pxeserver is in the
view one look later (SQLite: within 20 ms and the read; etcd: as soon as the watch
delivers it, milliseconds); a change made by this worker (an operator's PATCH, a node
it created, a phone-home) is put in at once. The view is *live* only while it follows
the store: before its first read, after the store stopped answering (until it has read
again), and with etcd while the journal holds writes the store has not taken (their
nodes are newer in the journal than in the store). A view that is not live is not
asked: the boot policy reads the store (or the local cache) as it always did. (The
following is :mod:`pxeserver.nodes.follower`'s, which the reaper's index shares.)

Memory: the heads as JSON text (about 500 bytes a node), and the most recently used
``KEEP_DECODED`` of them as node objects.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from ..model import MAC, Node
from ..store import Head, NodeFeed
from .follower import Follower

KEEP_DECODED = 4096
LOCAL = -1  # the revision of a node put in by this process (the store's is not known)


class NodeView(Follower):
    """Every node's head, following the store (:mod:`pxeserver.nodes.follower`)."""

    name = "node view"
    meanwhile = "boot requests read the store"

    def __init__(self, feed: NodeFeed, *, journal_empty: Callable[[], bool] | None = None) -> None:
        super().__init__(feed, journal_empty=journal_empty)
        self._heads: dict[MAC, tuple[int, str]] = {}
        self._decoded: dict[MAC, tuple[int, Node]] = {}
        self._lock = threading.Lock()

    # -- following the store ----------------------------------------------------------------

    def _replace(self, heads: list[Head]) -> None:
        fresh = {h.mac: (h.revision, h.text) for h in heads if h.text is not None}
        with self._lock:
            self._heads = fresh
            kept = self._decoded.items()
            self._decoded = {m: d for m, d in kept if fresh.get(m, (None,))[0] == d[0]}

    def _deliver(self, heads: list[Head], cursor: int) -> None:
        with self._lock:
            for head in heads:
                if head.text is None:
                    self._heads.pop(head.mac, None)
                    self._decoded.pop(head.mac, None)
                else:
                    self._heads[head.mac] = (head.revision, head.text)

    # -- what the boot policy asks ----------------------------------------------------------

    def get(self, mac: MAC) -> Node | None:
        """The node's head (no events), or None if the view has no such node. Ask only
        while :attr:`live`: otherwise None does not mean the store has none."""
        entry = self._heads.get(mac)
        if entry is None:
            return None
        revision, text = entry
        decoded = self._decoded.get(mac)
        if decoded is not None and decoded[0] == revision:
            return decoded[1]
        node = Node.from_dict(json.loads(text))
        with self._lock:
            if self._heads.get(mac, (None,))[0] == revision:
                if len(self._decoded) >= KEEP_DECODED:
                    self._decoded.pop(next(iter(self._decoded)))
                self._decoded[mac] = (revision, node)
        return node

    def put(self, node: Node) -> None:
        """A node this process wrote (or read from the store): in the view at once, until
        the store's next change of it comes through the feed."""
        head = node.replace(events=(), recent_ids=())
        with self._lock:
            self._heads[node.mac] = (LOCAL, json.dumps(head.head_dict()))
            self._decoded[node.mac] = (LOCAL, head)

    def forget(self, mac: MAC) -> None:
        with self._lock:
            self._heads.pop(mac, None)
            self._decoded.pop(mac, None)

    def __len__(self) -> int:
        return len(self._heads)
