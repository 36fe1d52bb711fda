"""A bound on the records of machines that never booted: the oldest make way.

Anyone on the boot network can name a MAC: over HTTP (``/ipxe``, ``/cloud-config``,
``/ignition``), over TFTP (``pxelinux.cfg/01-<mac>``) and in a DHCP sighting, and each
new MAC becomes a record. A record whose machine never phoned home and that no operator
touched (:attr:`pxeserver.model.Node.never_booted`) is what a flood of made-up MACs
leaves; at most ``limits.never_booted`` of them are kept. The ones last seen longest ago
are forgotten first (a real machine in the middle of its boot was seen a moment ago),
each with a compare-and-swap on the revision read, so a node that phoned home or was
labelled meanwhile stays. They are counted in ``pxeserver_never_booted_dropped``.

Every process that creates records (the HTTP workers, and the main process for TFTP and
DHCP) keeps the bound without asking the others. A creation first takes a place
(:meth:`NeverBootedBound.place`); after ``batch`` places since its last look, the process
reads the registry and forgets the oldest down to ``target = limit - writers * batch``,
then counts the creations still under way as places taken. So each writer adds at most
``batch`` records the last read did not see, and the registry never holds more than
``limit`` (short of writes racing the read itself); a flood costs one read of the registry
per ``batch`` new MACs. The first creation of a process looks first, so a restart does not
start above the bound.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .. import metrics
from ..errors import Conflict, StoreUnavailable

if TYPE_CHECKING:
    from ..store import NodeStore

log = logging.getLogger(__name__)

NEVER_BOOTED = 10_000
LOG_WINDOW_S = 60.0


class NeverBootedBound:
    def __init__(self, limit: int = NEVER_BOOTED, writers: int = 1) -> None:
        self.limit = limit
        self.batch = max(1, limit // (10 * max(1, writers)))
        self.target = max(0, limit - max(1, writers) * self.batch)
        self._since = self.batch  # places taken since the last look: look at the first
        self._under_way = 0  # creations that took a place and have not ended
        self._lock = threading.Lock()  # one look at a time; creations wait for it
        self._logged = float("-inf")
        self.dropped = 0

    @contextlib.contextmanager
    def place(self, store: NodeStore) -> Iterator[None]:
        """Around the creation of a never-booted record: make way first if it is due."""
        with self._lock:
            if self._since >= self.batch:
                try:
                    self._make_way(store)
                    self._since = self._under_way  # not in what was read
                except StoreUnavailable as exc:  # the creation fails too, or looks again
                    log.warning("could not keep limits.never_booted (%d) now: %s",
                                self.limit, exc)  # fmt: skip
            self._since += 1
            self._under_way += 1
        try:
            yield
        finally:
            with self._lock:
                self._under_way -= 1

    def _make_way(self, store: NodeStore) -> None:
        found = [v for v in store.scan() if v.node.never_booted]
        excess = len(found) - self.target
        if excess <= 0:
            return
        found.sort(key=lambda v: (v.node.last_seen, v.node.first_seen, v.node.mac.value))
        gone = 0
        for versioned in found[:excess]:
            try:
                if store.delete(versioned.node.mac, versioned.revision):
                    gone += 1
            except Conflict:
                continue  # it changed since: it may have booted, or an operator took it
        self.dropped += gone
        metrics.never_booted_dropped.inc(gone)
        now = time.monotonic()
        if gone and now - self._logged >= LOG_WINDOW_S:
            self._logged = now
            log.warning("more than limits.never_booted (%d) records of machines that never "
                        "booted: forgot the %d last seen longest ago (%d so far; a flood of "
                        "made-up MACs?)", self.limit, gone, self.dropped)  # fmt: skip
