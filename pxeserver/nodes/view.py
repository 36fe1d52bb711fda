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
asked: the boot policy reads the store (or the local cache) as it always did.

Memory: the heads as JSON text (about 500 bytes a node), and the most recently used
``KEEP_DECODED`` of them as node objects.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from ..errors import PxeError, StoreUnavailable
from ..model import MAC, Node
from ..store import Head, NodeFeed

log = logging.getLogger(__name__)

KEEP_DECODED = 4096
RETRY_MIN, RETRY_MAX = 0.5, 5.0
JOURNAL_CHECK_S = 0.1
LOCAL = -1  # the revision of a node put in by this process (the store's is not known)


class NodeView:
    def __init__(self, feed: NodeFeed, *, journal_empty: Callable[[], bool] | None = None) -> None:
        self.feed = feed
        self.journal_empty = journal_empty
        self._heads: dict[MAC, tuple[int, str]] = {}
        self._decoded: dict[MAC, tuple[int, Node]] = {}
        self._lock = threading.Lock()
        self._following = False
        self._journal_ok = (True, 0.0)  # last answer of journal_empty, and when
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.resyncs = 0  # snapshots read after the first (the feed failed or fell behind)

    # -- following the store ----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="node-view", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._following = False

    def _run(self) -> None:
        delay = RETRY_MIN
        while not self._stopping.is_set():
            try:
                heads, cursor = self.feed.snapshot()
                self._replace(heads)
                self._following = True
                delay = RETRY_MIN
                self.feed.follow(cursor, self._deliver, self._stopping)
            except StoreUnavailable as exc:
                log.info("the node view does not follow the store (%s); boot requests read "
                         "the store until it does again", exc)  # fmt: skip
            except PxeError as exc:
                log.error("the node view failed: %s", exc)
            except Exception:
                log.exception("the node view failed")
            self._following = False
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RETRY_MAX)
            self.resyncs += 1

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

    @property
    def live(self) -> bool:
        """True while the view follows the store (see the module docstring)."""
        if not self._following:
            return False
        if self.journal_empty is None:
            return True
        ok, when = self._journal_ok
        now = time.monotonic()
        if now - when > JOURNAL_CHECK_S:
            ok = self.journal_empty()
            self._journal_ok = (ok, now)
        return ok

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
