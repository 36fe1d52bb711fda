"""Following the store's changes (:class:`~pxeserver.store.NodeFeed`) in a thread: what an
HTTP worker's view (:mod:`pxeserver.nodes.view`) and the reaper's index of deadlines
(:mod:`pxeserver.nodes.deadlines`) share.

A follower reads every node's head (a snapshot), then takes the changes as the feed
delivers them; when the feed raises (the store stopped answering, or it fell behind),
it waits (0.5 s, doubling up to 5 s) and reads a snapshot again. It is *live* only while
it follows the store: not before its first snapshot, not after the feed failed (until
it has read again), and not while ``journal_empty`` says writes wait in the journal
(etcd: their nodes are newer in the journal than in the store). What is not live is not
asked: its user reads the store as it always did.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import PxeError, StoreUnavailable
from ..store import Head, NodeFeed

log = logging.getLogger(__name__)

RETRY_MIN, RETRY_MAX = 0.5, 5.0
JOURNAL_CHECK_S = 0.1


class Follower:
    """Subclasses keep what they need of the heads: :meth:`_replace` (a snapshot) and
    :meth:`_deliver` (changes, in the feed's thread)."""

    name = "follower"  # what the log calls it (its thread: with dashes)
    meanwhile = "its users read the store"  # what happens while it does not follow

    def __init__(self, feed: NodeFeed, *, journal_empty: Callable[[], bool] | None = None) -> None:
        self.feed = feed
        self.journal_empty = journal_empty
        self._following = False
        self._journal_ok = (True, 0.0)  # last answer of journal_empty, and when
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.resyncs = 0  # snapshots read after the first (the feed failed or fell behind)

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=self.name.replace(" ", "-"),
                                            daemon=True)  # fmt: skip
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
                cursor = self._snapshot()
                self._following = True
                delay = RETRY_MIN
                self.feed.follow(cursor, self._deliver, self._stopping)
            except StoreUnavailable as exc:
                log.info("the %s does not follow the store (%s); %s until it does again",
                         self.name, exc, self.meanwhile)  # fmt: skip
            except PxeError as exc:
                log.error("the %s failed: %s", self.name, exc)
            except Exception:
                log.exception("the %s failed", self.name)
            self._following = False
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RETRY_MAX)
            self.resyncs += 1

    def _snapshot(self) -> int:
        """Read every node's head into :meth:`_replace`; the cursor to follow from. (The
        snapshot's list is dropped on return, not held while the feed is followed.)"""
        heads, cursor = self.feed.snapshot()
        self._replace(heads)
        del heads
        release_memory()  # what reading every node's head left in the C heap
        return cursor

    def _replace(self, heads: list[Head]) -> None:
        raise NotImplementedError

    def _deliver(self, heads: list[Head], cursor: int) -> None:
        raise NotImplementedError

    @property
    def live(self) -> bool:
        """True while it follows the store (see the module docstring)."""
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


def release_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``).

    Also after a follower's snapshot (every node's head, and SQLite's page cache). A
    reaper pass that reads every node (10,000 documents: about 50 MB of JSON and node
    objects for a moment; without an index, or while it does not follow the store) leaves
    that memory freed in the process's heap unless trimmed: the main process sat at 96 MB
    RSS when idle instead of 80 (docs/BENCHMARKS.md, "Resource use"). Elsewhere than
    glibc this does nothing.
    """
    global _TRIM
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None
