"""The reaper: a thread of the main process that marks nodes lost when they go silent past
their deadline (:meth:`pxeserver.nodes.registry.Registry.expire`). With a feed of the
store's changes it asks its index of deadlines (:mod:`pxeserver.nodes.deadlines`) which
nodes are past theirs and reads only those; without one, or while the index does not
follow the store, each pass reads every node."""

from __future__ import annotations

import logging
import threading

from .. import metrics
from ..errors import StoreUnavailable
from ..model import Node
from ..store import NodeFeed
from .deadlines import Deadlines
from .follower import release_memory
from .registry import Registry
from .resilient import ResilientRegistry

log = logging.getLogger(__name__)


class Reaper(threading.Thread):
    """Marks nodes lost when they go silent past their deadline."""

    def __init__(self, registry: Registry, interval: float, feed: NodeFeed | None = None) -> None:
        super().__init__(name="reaper", daemon=True)
        self.registry = registry
        self.interval = interval
        self.stopping = threading.Event()
        self.deadlines = None if feed is None else deadlines_for(registry, feed)

    @staticmethod
    def interval_for(heartbeat_ttl: float, boot_timeout: float) -> float:
        """A quarter of the shortest deadline, from half a second to ten."""
        return max(0.5, min(10.0, min(heartbeat_ttl, boot_timeout) / 4))

    def reap(self) -> list[Node]:
        """One pass: the nodes the index says are past their deadline, or every node
        while there is no index that follows the store."""
        index = self.deadlines
        if index is not None and index.live:
            return self.registry.expire(index.due(self.registry.clock()))
        return self.registry.expire()

    def run(self) -> None:
        if self.deadlines is not None:
            self.deadlines.start()
        while not self.stopping.wait(self.interval):
            try:
                self.reap()
            except StoreUnavailable as exc:
                metrics.store_errors.labels(where="reaper").inc()
                log.warning("reaper: store unavailable, will try again: %s", exc)
            except Exception:
                log.exception("reaper: unexpected error; it keeps running")
            release_memory()

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=5)
        if self.deadlines is not None:
            self.deadlines.stop()


def deadlines_for(registry: Registry, feed: NodeFeed) -> Deadlines:
    """The reaper's index over ``feed``: with a local cache and journal (etcd), not live
    while the journal holds writes (as the HTTP workers' views), and pruning the cache."""
    if not isinstance(registry, ResilientRegistry):
        return Deadlines(feed, registry.deadline)
    return Deadlines(feed, registry.deadline, journal_empty=registry.journal_empty,
                     present=registry.guarded.retain, gone=registry.guarded.forget)  # fmt: skip
