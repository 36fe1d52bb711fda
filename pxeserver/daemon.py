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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import metrics
from .boot import BootService
from .config import Settings, load
from .errors import PxeError, StoreUnavailable
from .logs import configure
from .nodes.memory import Memory
from .nodes.reaper import Reaper
from .nodes.recorder import Recorder
from .nodes.registry import Registry
from .nodes.sightings import Sightings
from .nodes.steps import StepLog, StepReader
from .nodes.view import NodeView
from .render.answers import Answers
from .render.templates import Renderer
from .store import NodeFeed, NodeStore

if TYPE_CHECKING:
    from .nodes.resilient import Replayer

log = logging.getLogger(__name__)
VIEW_START_S = 5.0


# -- the one recipe -------------------------------------------------------------------------


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
    :class:`~pxeserver.nodes.resilient.ResilientRegistry` whose node cache and journal live
    in the data dir, so that known machines boot through a store outage."""
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
    settings: Settings,
    store: NodeStore | None = None,
    *,
    local: bool | None = None,
    worker: bool = False,
) -> BootService:
    """The boot policy, over the settings' store (or ``store``): how ``serve``, its HTTP
    workers, the CLI, the tests and the benchmarks all build it. ``local``: see
    :func:`make_registry` (False for one-off commands that only read, which must not need
    a writable data dir). ``worker``: an HTTP worker's, which answers known machines from
    memory and notes their boot steps for the main process to write (see
    :mod:`pxeserver.nodes.memory`); its view starts following the store now.
    :meth:`BootService.close` releases the store."""
    store = store if store is not None else make_store(settings)
    registry = make_registry(settings, store, local=local)
    sightings = Sightings(registry, new_macs_per_second=settings.limits.new_macs_per_second)
    memory = make_memory(settings, store, registry) if worker else None
    return BootService(settings, registry, Renderer(settings), sightings, memory)


def make_memory(settings: Settings, store: NodeStore, registry: Registry) -> Memory:
    """An HTTP worker's view of the registry over ``store``, its step log and answers."""
    from .nodes.resilient import ResilientRegistry

    feed: NodeFeed
    if settings.store.backend == "etcd":
        from .store.etcdfeed import EtcdFeed

        feed = EtcdFeed(store)  # type: ignore[arg-type]
    else:
        from .store.sqlite import SQLiteFeed

        feed = SQLiteFeed(store)  # type: ignore[arg-type]
    journal_empty = None
    if isinstance(registry, ResilientRegistry):
        journal = registry.journal
        journal_empty = lambda: journal.depth() == 0  # noqa: E731
    view = NodeView(feed, journal_empty=journal_empty)
    memory = Memory(registry, view, StepLog(steps_folder(settings)), Answers(settings))
    memory.start()
    # A worker answers from memory from its first request, unless the store is slow to
    # give the view its first read (then it reads the store, as before, until it has).
    memory.wait_live(VIEW_START_S)
    return memory


def steps_folder(settings: Settings) -> Path:
    """Where the HTTP workers note the boot steps they answered (pxeserver.nodes.steps)."""
    return settings.paths.data_dir / "steps"


def make_recorder(settings: Settings, registry: Registry) -> Recorder:
    """The main process's writer of the steps the HTTP workers noted."""
    from .nodes.batches import apply_batch
    from .nodes.resilient import ResilientRegistry

    write = (registry.apply_batch if isinstance(registry, ResilientRegistry)
             else functools.partial(apply_batch, registry))  # fmt: skip
    return Recorder(StepReader(steps_folder(settings)), write)


def configure_logging(settings: Settings) -> None:
    configure(settings.server.log_format, settings.server.log_level)


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

        address = listen_address(self.settings)
        for name, service, port in self._services(address):
            try:
                service.bind()
            except OSError as exc:
                self.close()
                raise bind_error(name, address, port(), exc) from exc
            self.services.append(service)

    def _services(self, address: str) -> list[tuple[str, Any, Callable[[], int]]]:
        """The services the settings ask for: name, server, the port a bind failed on."""
        s = self.settings.server
        found: list[tuple[str, Any, Callable[[], int]]] = []
        if s.tftp:
            found.append(("TFTP", self._tftp(address), lambda: s.tftp_port))
        if s.dhcp:
            dhcp = self._dhcp(address)
            found.append(("ProxyDHCP", dhcp, lambda: dhcp.failed_port))
        return found

    def _tftp(self, address: str) -> Any:
        from .tftp.server import TftpServer

        s, limits = self.settings.server, self.settings.limits
        return TftpServer(
            self.settings.paths.tftp_root,
            address=address,
            port=s.tftp_port,
            assets_dir=self.settings.paths.assets_dir,
            boot=self.service,
            base_url=http_base(self.settings),
            max_transfers=limits.tftp_sessions,
            max_per_client=limits.tftp_sessions_per_client,
            client_rate=float(limits.tftp_requests_per_client),
            workers=tftp_workers(),
            # Logging in the spawned transfer processes as here; a light module to
            # import there (see pxeserver/logs.py).
            worker_init=functools.partial(configure, s.log_format, s.log_level),
        )

    def _dhcp(self, address: str) -> Any:
        from .dhcp.proxy import ProxyDhcp

        s = self.settings.server
        return ProxyDhcp(
            self.service,
            address=address,
            interface=s.interface,
            dhcp_port=s.dhcp_port,
            pxe_port=s.pxe_port,
            tftp_root=self.settings.paths.tftp_root,
            uefi_loader=s.uefi_loader,
            http_base=http_base(self.settings),
        )

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


def local_state(service: BootService) -> Replayer | None:
    """For a registry with a local cache and journal (main process): teach ProxyDHCP the
    cached nodes, so that it decides about them as before a restart even while the store
    is down, and return the journal's replayer (None for a plain registry)."""
    from .nodes.resilient import Replayer, ResilientRegistry

    registry = service.registry
    if not isinstance(registry, ResilientRegistry):
        return None
    for node in registry.cache.nodes():
        service.sightings.remember(node)
    depth = registry.journal.depth()
    if depth:
        log.warning("%d journalled writes from an earlier run wait for the store", depth)
    return Replayer(registry)


# -- the main process -----------------------------------------------------------------------


class Daemon:
    """What ``pxeserver serve`` runs in its main process beside the HTTP server: the store
    and the boot policy, the UDP services, the reaper and the journal's replayer.

    :meth:`bind` opens the store and binds every socket, or raises PxeError that says what
    to do (a port in use or privileged, a user that could not serve); :meth:`start` binds
    first if that was not done, so its caller gets the error, then drops root if asked
    and starts everything; :meth:`stop` stops it all and closes the store. :func:`serve`
    has granian call them around its HTTP workers; the tests call them directly.
    """

    def __init__(self, settings: Settings, *, config: Path | None = None) -> None:
        self.settings = settings
        self.config = config  # the settings file: the dropped user must read it too
        self.service: BootService | None = None
        self.udp: UdpServices | None = None
        self.reaper: Reaper | None = None
        self.replayer: Replayer | None = None
        self.recorder: Recorder | None = None
        self.running = False

    def bind(self) -> None:
        s = self.settings
        try:
            store = make_store(s)
        except PxeError as exc:
            raise PxeError(f"cannot open the store: {exc}") from exc
        try:
            store.ping()
        except StoreUnavailable as exc:
            log.warning("the store does not answer yet (%s); known machines wait and new "
                        "ones get 503 until it does", exc)  # fmt: skip
        try:
            self.service = make_service(s, store)
        except BaseException:
            store.close()
            raise
        c = s.cluster
        self.reaper = Reaper(
            self.service.registry, Reaper.interval_for(c.heartbeat_ttl, c.boot_timeout)
        )
        self.replayer = local_state(self.service)
        self.recorder = make_recorder(s, self.service.registry)
        # What a server killed earlier had answered but not written: in now, before any
        # HTTP worker answers again (into the journal if etcd does not answer).
        self.recorder.drain()
        self.udp = UdpServices(s, self.service)
        try:
            if s.server.user:
                self._check_user(s.server.user)
            self.udp.bind()
        except BaseException:
            self.stop()
            raise

    def _check_user(self, user: str) -> None:
        from .host.privileges import check_user_can_serve

        paths = self.settings.paths
        readable = [paths.tftp_root, paths.assets_dir, paths.templates_dir]
        check_user_can_serve(user, [*readable, *([self.config] if self.config else [])],
                             paths.data_dir)  # fmt: skip

    def start(self) -> None:
        if self.service is None:
            self.bind()
        assert self.service is not None and self.udp is not None and self.reaper is not None
        s = self.settings.server
        if s.user:
            from .host.privileges import drop_privileges

            # granian's workers bind the HTTP port themselves, after this: below 1024
            # they need CAP_NET_BIND_SERVICE (pxeserver.host.privileges says why).
            drop_privileges(s.user, [self.settings.paths.data_dir],
                            keep_bind=0 < s.http_port < 1024)  # fmt: skip
        self.udp.start()
        self.reaper.start()
        if self.recorder is not None:
            self.recorder.start()
        if self.replayer is not None:
            self.replayer.start()
        self.running = True
        log.info("pxeserver %s: HTTP on %s:%d (%d workers), store %r, %d profiles, %d groups",
                 "serving", s.listen, s.http_port, s.http_workers, self.service.registry.store,
                 len(self.settings.profiles), len(self.settings.groups))  # fmt: skip
        if s.api_token is None and s.listen not in ("127.0.0.1", "::1"):
            log.warning("no api_token is set: anyone who reaches port %d can change nodes; set "
                        "server.api_token or PXESERVER_API_TOKEN", s.http_port)  # fmt: skip

    def stop(self) -> None:
        """Stop what runs and release what is open (also after a bind that failed)."""
        for part in (self.udp, self.reaper, self.recorder, self.replayer):
            if part is not None:
                part.stop()
        if self.service is not None:
            self.service.close()
        if self.running:
            log.info("pxeserver stopped")
        self.service = self.udp = self.reaper = self.replayer = self.recorder = None
        self.running = False


# -- HTTP (granian) -------------------------------------------------------------------------


def _worker_app(spec: str) -> Any:
    """Build the RSGI application inside an HTTP worker process (granian calls this after
    spawning it; see :func:`pxeserver.web.entrance.granian_server`)."""
    from .host.children import die_with_parent
    from .web import create_app
    from .web.entrance import Entrance

    args = json.loads(spec)
    die_with_parent(args["parent"])  # no orphan holding the HTTP port if we are SIGKILLed
    path = Path(args["config"]) if args["config"] else None
    settings, _ = load(path, args["overrides"])
    configure_logging(settings)
    service = make_service(settings, worker=True)
    return Entrance(create_app(settings, service), service, settings)


def serve(config: Path | None, overrides: Mapping[str, Any]) -> int:
    """Run the server in the foreground until SIGINT or SIGTERM."""
    from .web.entrance import granian_server

    settings, warnings = load(config, overrides)
    configure_logging(settings)
    for problem in warnings:
        log.warning("%s", problem)
    # Before anything records and before the HTTP workers are spawned (they inherit it).
    metrics.setup(settings.paths.data_dir / "metrics")
    daemon = Daemon(settings, config=config)
    try:
        daemon.bind()
    except PxeError as exc:
        log.error("%s", exc)
        return 1
    # Workers are spawned, not forked: the main process runs threads (UDP services,
    # reaper), and forking a threaded process can copy held locks into the child.
    multiprocessing.set_start_method("spawn", force=True)
    spec = json.dumps({"config": str(config) if config else None,
                       "overrides": dict(overrides), "parent": os.getpid()})  # fmt: skip
    server = granian_server(settings)
    # Started once granian has bound the HTTP port and before it spawns a worker: the
    # moment to stop being root, so that the workers spawn unprivileged.
    server.on_startup(daemon.start)
    server.on_shutdown(daemon.stop)
    server.serve(target_loader=functools.partial(_worker_app, spec), wrap_loader=False)
    return 0
