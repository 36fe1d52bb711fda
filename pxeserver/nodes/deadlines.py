"""The reaper's index of deadlines: which nodes may be past theirs, without reading them all.

The main process follows the store's changes through the same feed as the HTTP workers'
views (:mod:`pxeserver.nodes.follower`) and keeps, for each node in a state that has a
deadline (booting, configured, ready), the time it passes it
(:meth:`~pxeserver.nodes.registry.Registry.deadline`, from the head's state, last_seen
and last_heartbeat); nodes in other states are not kept. A reaper pass marks lost only
the nodes :meth:`Deadlines.due` names, each decided again on its current record inside
its compare-and-swap (:meth:`~pxeserver.nodes.registry.Registry.expire`): a heartbeat
the index has not seen yet is found there, and nothing is written. While the index is
not live (see the follower) the reaper reads every node, as it did before there was one.

What the feed says about deletions also reaches ``present`` (every node a snapshot
holds) and ``gone`` (nodes deleted since): with etcd the main process prunes its local
node cache with them (nodes another pxeserver forgot must not boot from here during an
outage), which the reaper's full scan did before.

Memory: a MAC and a float per node with a deadline (a few hundred bytes with the dict).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from ..model import MAC, Node, State
from ..store import Head, NodeFeed
from .follower import Follower

DeadlineOf = Callable[[State, float, float | None], float | None]


class Deadlines(Follower):
    name = "reaper index"
    meanwhile = "the reaper reads every node"

    def __init__(
        self,
        feed: NodeFeed,
        deadline: DeadlineOf,
        *,
        journal_empty: Callable[[], bool] | None = None,
        present: Callable[[set[MAC]], None] | None = None,
        gone: Callable[[list[MAC]], None] | None = None,
    ) -> None:
        super().__init__(feed, journal_empty=journal_empty)
        self.deadline = deadline
        self.present = present
        self.gone = gone
        self._deadlines: dict[MAC, float] = {}
        self._lock = threading.Lock()

    def _of(self, text: str) -> float | None:
        node = Node.from_dict(json.loads(text))
        return self.deadline(node.state, node.last_seen, node.last_heartbeat)

    def _replace(self, heads: list[Head]) -> None:
        fresh = {}
        for head in heads:
            deadline = None if head.text is None else self._of(head.text)
            if deadline is not None:
                fresh[head.mac] = deadline
        with self._lock:
            self._deadlines = fresh
        if self.present is not None:
            self.present({h.mac for h in heads if h.text is not None})

    def _deliver(self, heads: list[Head], cursor: int) -> None:
        changed = [(h.mac, None if h.text is None else self._of(h.text)) for h in heads]
        with self._lock:
            for mac, deadline in changed:
                if deadline is None:
                    self._deadlines.pop(mac, None)
                else:
                    self._deadlines[mac] = deadline
        gone = [h.mac for h in heads if h.text is None]
        if gone and self.gone is not None:
            self.gone(gone)

    def due(self, now: float) -> list[MAC]:
        """The nodes past their deadline at ``now``, as far as the index knows. Ask only
        while :attr:`live`: otherwise a node it does not name may be past its deadline."""
        with self._lock:
            return [mac for mac, deadline in self._deadlines.items() if deadline < now]

    def __len__(self) -> int:
        return len(self._deadlines)
