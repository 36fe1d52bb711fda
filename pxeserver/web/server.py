"""granian's server for the HTTP workers: how many connections, how long a request head
may take, how long a stopping worker may hang (the settings' limits), and what of
granian's advice on start is not for the operator. Each worker builds its RSGI
application (:class:`pxeserver.web.entrance.Entrance`) with the loader ``serve`` gives it.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import Settings

WORKERS_KILL_TIMEOUT_S = 5


def http_server(settings: Settings) -> Any:
    """granian's server for the HTTP workers (each builds its RSGI entrance with
    :func:`_worker_app`; pxeserver.web.entrance says why RSGI).

    What keeps slow or idle connections from stopping it (docs/SECURITY.md): each worker
    holds up to ``limits.http_connections`` connections (granian's ``backpressure``; its
    default, 512 a worker, was the ~1,100 slow connections that stopped all HTTP), with
    the open-files limit raised to fit; a connection has ``limits.http_header_timeout``
    seconds to send a whole request head, idle or not; and HTTP/1 only, because in
    granian's auto mode (HTTP/1 or 2) that timer starts only once the protocol is known,
    so a connection that sent nothing was held for good (measured: open after 90 s).
    No client of pxeserver speaks HTTP/2 without TLS (h2c) anyway.
    """
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server import Server

    from ..host.resources import open_files_for

    static: dict[str, Any] = {}
    if settings.server.static_assets:
        # granian answers /assets/... itself, from Rust, before a worker's Python sees it.
        static = {
            "static_path_route": ["/assets"],
            "static_path_mount": [settings.paths.assets_dir.resolve()],
            "static_path_expires": 300,
        }
    limits = settings.limits
    return Server(
        "pxeserver",
        address=settings.server.listen,
        port=settings.server.http_port,
        interface=Interfaces.RSGI,
        workers=settings.server.http_workers,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=limits.http_header_timeout * 1000),
        backlog=4096,  # what waits to be accepted (the kernel may cap it: somaxconn)
        backpressure=open_files_for(limits.http_connections),
        # (no blocking_threads: RSGI takes one; the entrance has its own thread pool)
        # A machine that lost power mid-download leaves its HTTP connection open for
        # good; without a limit granian waits on it forever and SIGTERM never ends us.
        workers_kill_timeout=WORKERS_KILL_TIMEOUT_S,
        log_enabled=True,
        log_access=False,
        **static,
    )


class _Intended(logging.Filter):
    """granian's advice on settings pxeserver chose on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        # 8 blocking threads a worker, more than 2 × cores + 1 on a small machine: each
        # thread mostly waits on the store or a client (docs/BENCHMARKS.md).
        return not record.getMessage().startswith("Configuration allows spawning up to")


def quiet_granian() -> None:
    """No warning on a normal start: drop granian's advice about what we chose on purpose."""
    logging.getLogger("_granian").addFilter(_Intended())
