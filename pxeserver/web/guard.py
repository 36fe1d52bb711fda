"""Requests in flight from one address, in one HTTP worker: at most
``limits.http_requests_per_client``; the next is answered 503 with ``Retry-After`` at once.

Each HTTP worker runs Flask's views in a small pool of threads (granian's
``blocking_threads``). A request holds its thread while its body arrives and while its
answer leaves: measured before this guard, 16 connections from one client that sent a
request body a byte at a time, or that never read a kernel they asked for, held every
thread of both workers, and no machine got its script until they closed. With the guard,
one address holds at most this many threads of a worker; the rest stay for everyone else.

A request counts from the moment the worker's thread takes it until its answer is sent
(granian closes the answer's iterator). Loopback clients are not counted: they are this
machine (the operator, a benchmark, a reverse proxy that keeps its own limits). The 503
is what iPXE waits on and asks again, as for a store that does not answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import metrics
from ..host.netif import is_loopback

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
LOG_WINDOW_S = 60.0
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class InFlight:
    """WSGI middleware: the per-address cap on requests in flight (see the module)."""

    def __init__(self, app: WsgiApp, per_client: int) -> None:
        self.app = app
        self.per_client = per_client
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._logged = float("-inf")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        client = str(environ.get("REMOTE_ADDR") or "")
        if is_loopback(client):
            return self.app(environ, start_response)
        if not self._take(client):
            return self._refuse(client, start_response)
        try:
            answer = self.app(environ, start_response)
        except BaseException:
            self._give_back(client)
            raise
        return _Answer(answer, lambda: self._give_back(client))

    def in_flight(self, client: str) -> int:
        with self._lock:
            return self._counts.get(client, 0)

    def hold(self, client: str) -> bool:
        """Count a request of ``client`` in flight until :meth:`release`; False (nothing
        counted) if it has its share already: answer it with :meth:`refuse`. Loopback
        clients are not counted. For a server that runs :attr:`app` itself (the RSGI
        entrance reads a body on its event loop before a thread runs Flask)."""
        return is_loopback(client) or self._take(client)

    def release(self, client: str) -> None:
        if not is_loopback(client):
            self._give_back(client)

    def refuse(self, client: str, start_response: Callable[..., Any]) -> list[bytes]:
        """The 503 for a request past ``client``'s share, as a WSGI answer."""
        return self._refuse(client, start_response)

    def _take(self, client: str) -> bool:
        with self._lock:
            held = self._counts.get(client, 0)
            if held >= self.per_client:
                return False
            self._counts[client] = held + 1
            return True

    def _give_back(self, client: str) -> None:
        with self._lock:
            held = self._counts.get(client, 0) - 1
            if held > 0:
                self._counts[client] = held
            else:
                self._counts.pop(client, None)

    def _refuse(self, client: str, start_response: Callable[..., Any]) -> list[bytes]:
        metrics.limited.labels(what="http-client").inc()
        now = time.monotonic()
        if now - self._logged >= LOG_WINDOW_S:  # one line a minute, not one per request
            self._logged = now
            log.warning("%s has %d requests in flight in this worker "
                        "(limits.http_requests_per_client); turning more away with 503",
                        client, self.per_client)  # fmt: skip
        body = (
            f"{client} has {self.per_client} requests in progress already "
            f"(limits.http_requests_per_client); try again in {RETRY_AFTER_S} s\n"
        ).encode()
        start_response("503 Service Unavailable", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Retry-After", str(RETRY_AFTER_S)),
            ("X-Content-Type-Options", "nosniff"),
        ])  # fmt: skip
        return [body]


class _Answer:
    """An answer's iterator that gives its slot back when the server closes it."""

    def __init__(self, inner: Iterable[bytes], release: Callable[[], None]) -> None:
        self.inner = inner
        self.release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.inner)

    def close(self) -> None:
        try:
            close = getattr(self.inner, "close", None)
            if close is not None:
                close()
        finally:
            if self.release is not None:
                self.release()
                self.release = None
