"""Wiring and running: the only module that puts concrete things together.

Process layout of ``pxeserver serve``: the main process binds every socket, runs the UDP
services (TFTP, ProxyDHCP) and the reaper that marks silent nodes lost, and supervises
the HTTP workers. The HTTP workers are separate processes (granian, WSGI) so that a boot
storm's HTTP load does not share an interpreter lock with TFTP's packet loop; each worker
builds its own store connection and :class:`BootService` from the same settings. The
store (SQLite in WAL mode, or etcd) is what they share. TFTP transfers run in processes
of their own too (:func:`tftp_workers`), fed by the TFTP listener in the main process;
ProxyDHCP answers from the main process and hands what it saw to the boot policy's
background writer there. With ``--user``, root is dropped in granian's ``on_startup``
hook: after every socket is bound, before any worker process exists.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import metrics
from .boot import BootService
from .config import Settings, load
from .errors import PxeError, StoreUnavailable
from .logs import configure
from .nodes.registry import Registry
from .render.templates import Renderer
from .store import NodeStore

if TYPE_CHECKING:
    from .nodes.resilient import Replayer

log = logging.getLogger(__name__)
WORKERS_KILL_TIMEOUT_S = 5


def make_store(settings: Settings) -> NodeStore:
    if settings.store.backend == "etcd":
        from .store.etcd import EtcdStore

        return EtcdStore(
            settings.store.etcd_endpoints, settings.store.etcd_prefix, settings.store.timeout
        )
    from .store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path, settings.store.timeout)


def make_registry(settings: Settings, store: NodeStore, *, local: bool | None = None) -> Registry:
    """The registry over ``store``. With ``local`` (default: for the etcd backend), a
    :class:`~pxeserver.nodes.resilient.ResilientRegistry` whose node cache and journal live in
    the data dir, so that known machines boot through a store outage."""
    c = settings.cluster
    kwargs: dict[str, Any] = {
        "hostname_pattern": c.hostname_pattern,
        "events_kept": c.events_kept,
        "heartbeat_ttl": c.heartbeat_ttl,
        "boot_timeout": c.boot_timeout,
    }
    if local is None:
        local = settings.store.backend == "etcd"
    if not local:
        return Registry(store, **kwargs)
    from .nodes.cache import NodeCache
    from .nodes.journal import Journal
    from .nodes.resilient import ResilientRegistry

    data = settings.paths.data_dir
    return ResilientRegistry(store, NodeCache(data / "cache.db"), Journal(data / "journal.db"),
                             **kwargs)  # fmt: skip


def make_service(
    settings: Settings, store: NodeStore | None = None, *, local: bool | None = None
) -> BootService:
    """The boot service (``local``: see :func:`make_registry`; False for one-off commands
    that only read, which must not need a writable data dir)."""
    store = store if store is not None else make_store(settings)
    return BootService(settings, make_registry(settings, store, local=local), Renderer(settings))


def configure_logging(settings: Settings) -> None:
    configure(settings.server.log_format, settings.server.log_level)


# -- HTTP workers ---------------------------------------------------------------------------


def _worker_app(spec: str) -> Any:
    """Build the WSGI app inside an HTTP worker process (granian calls this after spawning)."""
    from .web import create_app

    args = json.loads(spec)
    from .host.children import die_with_parent

    die_with_parent(args["parent"])  # no orphan holding the HTTP port if we are SIGKILLed
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
            release_memory()

    def stop(self) -> None:
        self.stopping.set()
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
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


def reaper_interval(settings: Settings) -> float:
    shortest = min(settings.cluster.heartbeat_ttl, settings.cluster.boot_timeout)
    return max(0.5, min(10.0, shortest / 4))


# -- UDP services (TFTP, ProxyDHCP) ---------------------------------------------------------


def listen_address(settings: Settings) -> str:
    """The address UDP services bind: the interface's, if one is named, else ``listen``."""
    from .host.netif import interface_address

    if settings.server.interface:
        return interface_address(settings.server.interface)
    return settings.server.listen


def http_base(settings: Settings) -> Callable[[str], str]:
    """How a machine that reached us at a local address finds the HTTP side."""

    def base(local: str) -> str:
        if settings.server.base_url:
            return settings.server.base_url
        return f"http://{local}:{settings.server.http_port}"

    return base


def tftp_workers() -> int:
    """Processes that run TFTP transfers: one per core, at most 4.

    One Python thread could not keep up with tftpd-hpa's process per transfer on 32
    concurrent transfers (docs/BENCHMARKS.md); transfer loops in their own processes use
    every core and never share an interpreter lock with ProxyDHCP or the reaper.
    """
    return max(1, min(os.cpu_count() or 1, 4))


class UdpServices:
    """TFTP and ProxyDHCP: sockets bound in the main process, started and stopped together.

    The listeners (requests, policy, ProxyDHCP answers) are threads of the main process
    beside the reaper; TFTP transfers run in :func:`tftp_workers` spawned processes, which
    are started after privileges are dropped.
    """

    def __init__(self, settings: Settings, service: BootService) -> None:
        self.settings = settings
        self.service = service
        self.services: list[Any] = []

    def bind(self) -> None:
        """Bind every socket, or raise PxeError with what to do (privileged ports)."""
        from .host.netif import bind_error
        from .tftp.server import TftpServer

        s = self.settings.server
        address = listen_address(self.settings)
        if s.tftp:
            tftp = TftpServer(
                self.settings.paths.tftp_root,
                address=address,
                port=s.tftp_port,
                assets_dir=self.settings.paths.assets_dir,
                boot=self.service,
                base_url=http_base(self.settings),
                max_transfers=self.settings.limits.tftp_sessions,
                max_per_client=self.settings.limits.tftp_sessions_per_client,
                client_rate=float(self.settings.limits.tftp_requests_per_client),
                workers=tftp_workers(),
                # Logging in the spawned transfer processes as here; a light module to
                # import there (see pxeserver/logs.py).
                worker_init=functools.partial(configure, s.log_format, s.log_level),
            )
            try:
                tftp.bind()
            except OSError as exc:
                raise bind_error("TFTP", address, s.tftp_port, exc) from exc
            self.services.append(tftp)
        if s.dhcp:
            from .dhcp.proxy import ProxyDhcp

            dhcp = ProxyDhcp(
                self.service,
                address=address,
                interface=s.interface,
                dhcp_port=s.dhcp_port,
                pxe_port=s.pxe_port,
                tftp_root=self.settings.paths.tftp_root,
                uefi_loader=s.uefi_loader,
                http_base=http_base(self.settings),
            )
            try:
                dhcp.bind()
            except OSError as exc:
                self.close()
                raise bind_error("ProxyDHCP", address, dhcp.failed_port, exc) from exc
            self.services.append(dhcp)

    def close(self) -> None:
        """Release the sockets of services bound but never started."""
        for service in self.services:
            service.close()
        self.services = []

    def start(self) -> None:
        self.service.start_background()
        for service in self.services:
            service.start()

    def stop(self) -> None:
        for service in self.services:
            service.stop()
        self.service.stop_background()


def local_state(registry: Registry, service: BootService) -> Replayer | None:
    """For a registry with a local cache and journal (main process): teach ProxyDHCP the
    cached nodes, so that it decides about them as before a restart even while the store
    is down, and return the journal's replayer (None for a plain registry)."""
    from .nodes.resilient import Replayer, ResilientRegistry

    if not isinstance(registry, ResilientRegistry):
        return None
    for node in registry.cache.nodes():
        service.sightings.remember(node)
    depth = registry.journal.depth()
    if depth:
        log.warning("%d journalled writes from an earlier run wait for the store", depth)
    return Replayer(registry)


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
    try:
        registry = make_registry(settings, store)
    except PxeError as exc:
        log.error("%s", exc)
        store.close()
        return 1
    reaper = Reaper(registry, reaper_interval(settings))
    service = BootService(settings, registry, Renderer(settings))
    replayer = local_state(registry, service)
    udp = UdpServices(settings, service)
    try:
        if settings.server.user:
            from .host.netif import check_user
            from .host.privileges import check_user_can_serve

            check_user(settings.server.user)
            paths = settings.paths
            readable = [paths.tftp_root, paths.assets_dir, paths.templates_dir]
            check_user_can_serve(
                settings.server.user, [*readable, *([config] if config else [])], paths.data_dir
            )
        udp.bind()
    except PxeError as exc:
        udp.close()
        log.error("%s", exc)
        store.close()
        return 1

    from granian.constants import Interfaces
    from granian.server import Server

    # Workers are spawned, not forked: the main process runs threads (UDP services,
    # reaper), and forking a threaded process can copy held locks into the child.
    multiprocessing.set_start_method("spawn", force=True)
    spec = json.dumps(
        {
            "config": str(config) if config else None,
            "overrides": dict(overrides),
            "parent": os.getpid(),
        }
    )
    static: dict[str, Any] = {}
    if settings.server.static_assets:
        # granian answers /assets/... itself, from Rust, before a worker's Python sees it.
        static = {
            "static_path_route": ["/assets"],
            "static_path_mount": [settings.paths.assets_dir.resolve()],
            "static_path_expires": 300,
        }
    server = Server(
        "pxeserver",
        address=settings.server.listen,
        port=settings.server.http_port,
        interface=Interfaces.WSGI,
        workers=settings.server.http_workers,
        blocking_threads=8,
        # A machine that lost power mid-download leaves its HTTP connection open for
        # good; without a limit granian waits on it forever and SIGTERM never ends us.
        workers_kill_timeout=WORKERS_KILL_TIMEOUT_S,
        log_enabled=True,
        log_access=False,
        **static,
    )

    def started() -> None:
        # Ports are bound (HTTP by granian, UDP above) and no worker exists yet: the
        # moment to stop being root, so the workers spawn unprivileged.
        if settings.server.user:
            from .host.netif import drop_privileges

            # granian's workers bind the HTTP port themselves, after this: below 1024
            # they need CAP_NET_BIND_SERVICE (pxeserver.host.privileges says why).
            drop_privileges(
                settings.server.user,
                [settings.paths.data_dir],
                keep_bind=0 < settings.server.http_port < 1024,
            )
        udp.start()
        reaper.start()
        if replayer is not None:
            replayer.start()
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
        udp.stop()
        reaper.stop()
        if replayer is not None:
            replayer.stop()
        registry.store.close()
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
