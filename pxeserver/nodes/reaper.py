"""The reaper: a thread of the main process that marks nodes lost when they go silent past
their deadline (:meth:`pxeserver.nodes.registry.Registry.expire`)."""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

from .. import metrics
from ..errors import StoreUnavailable
from .registry import Registry

log = logging.getLogger(__name__)


class Reaper(threading.Thread):
    """Marks nodes lost when they go silent past their deadline."""

    def __init__(self, registry: Registry, interval: float) -> None:
        super().__init__(name="reaper", daemon=True)
        self.registry = registry
        self.interval = interval
        self.stopping = threading.Event()

    @staticmethod
    def interval_for(heartbeat_ttl: float, boot_timeout: float) -> float:
        """A quarter of the shortest deadline, from half a second to ten."""
        return max(0.5, min(10.0, min(heartbeat_ttl, boot_timeout) / 4))

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.registry.expire()
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


def release_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``).

    Each reaper pass reads every node (10,000 documents: about 50 MB of JSON and node
    objects for a moment). Freed, that memory stays in the process's heap unless trimmed:
    the main process sat at 96 MB RSS when idle instead of 80 (docs/BENCHMARKS.md,
    "Resource use"). Elsewhere than glibc this does nothing.
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
