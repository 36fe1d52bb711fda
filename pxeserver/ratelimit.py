"""Token buckets: how the UDP services bound what a flood can make them do. Pure; no sockets.

A :class:`TokenBucket` holds up to ``burst`` tokens and gains ``rate`` a second; taking one
succeeds while any is left. :class:`KeyedBuckets` keeps one bucket per key (a client's
address) for the most recently seen ``max_keys`` keys: a key pushed out starts again with a
full bucket, so memory stays bounded whatever the number of addresses a flood spoofs.

Used by TFTP (new requests per client address a second) and by the sightings writer (new
MACs written to the registry a second, all clients together).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. Thread-safe."""

    def __init__(self, rate: float, burst: float, *, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.last = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take one token: True if there was one."""
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


class KeyedBuckets:
    """One bucket per key for the last ``max_keys`` keys seen (least recently used out)."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 4096,
                 clock: Clock = time.monotonic) -> None:  # fmt: skip
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> bool:
        """Take one token from ``key``'s bucket: True if there was one."""
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            ok = tokens >= 1.0
            if ok:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return ok

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


class LogBudget:
    """At most ``rate`` log lines a second (``burst`` at once) for one kind of line, so that a
    flood of hostile packets cannot fill the disk; the lines left out are counted and the
    next line written says how many."""

    def __init__(self, rate: float = 20.0, burst: float = 100.0, *,
                 clock: Clock = time.monotonic) -> None:  # fmt: skip
        self.bucket = TokenBucket(rate, burst, clock=clock)
        self.suppressed = 0
        self._lock = threading.Lock()

    def allow(self) -> tuple[bool, int]:
        """Whether to write this line, and how many were left out since the last one."""
        with self._lock:
            if self.bucket.take():
                left_out, self.suppressed = self.suppressed, 0
                return True, left_out
            self.suppressed += 1
            return False, 0


def left_out(count: int) -> str:
    """The suffix of a log line written after ``count`` similar lines were left out."""
    return f" ({count} similar lines left out: too many a second)" if count else ""
