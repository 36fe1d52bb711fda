"""Wiring and running: the only module that puts concrete things together.

Process layout of ``pxeserver serve``: the main process binds every socket, runs the UDP
services (TFTP, ProxyDHCP) and the reaper that marks silent nodes lost, and supervises
the HTTP workers. The HTTP workers are separate processes (granian, WSGI) so that a boot
storm's HTTP load does not share an interpreter lock with TFTP's packet loop; each worker
builds its own store connection and :class:`BootService` from the same settings. The
store (SQLite in WAL mode, or etcd) is what they share.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import metrics
from .boot import BootService
from .config import Settings, load
from .errors import PxeError, StoreUnavailable
from .registry import Registry
from .render import Renderer
from .store import NodeStore

log = logging.getLogger(__name__)


def make_store(settings: Settings) -> NodeStore:
    if settings.store.backend == "etcd":
        from .store.etcd import EtcdStore

        return EtcdStore(
            settings.store.etcd_endpoints, settings.store.etcd_prefix, settings.store.timeout
        )
    from .store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path, settings.store.timeout)


def make_registry(settings: Settings, store: NodeStore) -> Registry:
    c = settings.cluster
    return Registry(
        store,
        hostname_pattern=c.hostname_pattern,
        events_kept=c.events_kept,
        heartbeat_ttl=c.heartbeat_ttl,
        boot_timeout=c.boot_timeout,
    )


def make_service(settings: Settings, store: NodeStore | None = None) -> BootService:
    store = store if store is not None else make_store(settings)
    return BootService(settings, make_registry(settings, store), Renderer(settings))


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.server.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.server.log_level)


# Fields a log call may carry with ``extra=`` (boot milestones carry the node's) that the
# JSON format writes as fields of their own, so a log pipeline can filter by MAC.
LOG_FIELDS = ("mac", "hostname", "event", "state", "took", "profile")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in LOG_FIELDS:
            if name in record.__dict__:
                d[name] = record.__dict__[name]
        if record.exc_info:
            d["exception"] = self.formatException(record.exc_info)
        return json.dumps(d)


# -- HTTP workers ---------------------------------------------------------------------------


def _worker_app(spec: str) -> Any:
    """Build the WSGI app inside an HTTP worker process (granian calls this after spawning)."""
    from .web import create_app

    args = json.loads(spec)
    path = Path(args["config"]) if args["config"] else None
    settings, _ = load(path, args["overrides"])
    configure_logging(settings)
    return create_app(settings, make_service(settings))


class Reaper(threading.Thread):
    """Marks nodes lost when they go silent past their deadline."""

    def __init__(self, registry: Registry, interval: float) -> None:
        super().__init__(name="reaper", daemon=True)
        self.registry = registry
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.registry.expire()
            except StoreUnavailable as exc:
                metrics.store_errors.labels(where="reaper").inc()
                log.warning("reaper: store unavailable, will try again: %s", exc)
            except Exception:
                log.exception("reaper: unexpected error; it keeps running")

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


def reaper_interval(settings: Settings) -> float:
    shortest = min(settings.cluster.heartbeat_ttl, settings.cluster.boot_timeout)
    return max(0.5, min(10.0, shortest / 4))


def serve(config: Path | None, overrides: Mapping[str, Any]) -> int:
    """Run the server in the foreground until SIGINT or SIGTERM."""
    settings, warnings = load(config, overrides)
    configure_logging(settings)
    for problem in warnings:
        log.warning("%s", problem)
    # Before anything records and before the HTTP workers are spawned (they inherit it).
    metrics.setup(settings.paths.data_dir / "metrics")
    try:
        store = make_store(settings)
    except PxeError as exc:
        log.error("cannot open the store: %s", exc)
        return 1
    try:
        store.ping()
    except StoreUnavailable as exc:
        log.warning(
            "the store does not answer yet (%s); known machines wait and new ones get 503 "
            "until it does",
            exc,
        )
    registry = make_registry(settings, store)
    reaper = Reaper(registry, reaper_interval(settings))

    from granian.constants import Interfaces
    from granian.server import Server

    # Workers are spawned, not forked: the main process runs threads (UDP services,
    # reaper), and forking a threaded process can copy held locks into the child.
    multiprocessing.set_start_method("spawn", force=True)
    spec = json.dumps({"config": str(config) if config else None, "overrides": dict(overrides)})
    server = Server(
        "pxeserver",
        address=settings.server.listen,
        port=settings.server.http_port,
        interface=Interfaces.WSGI,
        workers=settings.server.http_workers,
        blocking_threads=8,
        log_enabled=True,
        log_access=False,
    )

    def started() -> None:
        reaper.start()
        log.info(
            "pxeserver %s: HTTP on %s:%d (%d workers), store %r, %d profiles, %d groups",
            "serving",
            settings.server.listen,
            settings.server.http_port,
            settings.server.http_workers,
            store,
            len(settings.profiles),
            len(settings.groups),
        )
        if settings.server.api_token is None and settings.server.listen not in ("127.0.0.1", "::1"):
            log.warning(
                "no api_token is set: anyone who reaches port %d can change nodes; set "
                "server.api_token or PXESERVER_API_TOKEN",
                settings.server.http_port,
            )

    def stopped() -> None:
        reaper.stop()
        store.close()
        log.info("pxeserver stopped")

    server.on_startup(started)
    server.on_shutdown(stopped)
    server.serve(target_loader=functools.partial(_worker_app, spec), wrap_loader=False)
    return 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
