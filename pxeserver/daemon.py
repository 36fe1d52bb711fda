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
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import metrics
from .boot import BootService
from .config import Settings, load
from .errors import PxeError, StoreUnavailable
from .fetchsecret import FetchSecrets, file_key, setting_key
from .host.claims import DataFolderLock, PortClaim, check_tcp_port_free
from .host.netif import connected_network
from .logs import configure
from .nodes.memory import Memory
from .nodes.reaper import Reaper
from .nodes.recorder import Recorder
from .nodes.registry import Registry
from .nodes.resilient import Replayer, ResilientRegistry
from .nodes.sightings import Sightings
from .nodes.steps import StepLog, StepReader
from .nodes.view import NodeView
from .render.answers import Answers
from .render.templates import Renderer
from .store import NodeFeed, NodeStore
from .udp import UdpServices

log = logging.getLogger(__name__)
VIEW_START_S = 5.0


# -- the one recipe -------------------------------------------------------------------------


def make_store(settings: Settings) -> NodeStore:
    if settings.store.backend == "etcd":
        from .store.etcd import EtcdStore

        s, tls = settings.store, settings.store.etcd_tls
        files = {"ca": tls.ca, "cert": tls.cert, "key": tls.key} if tls else {}
        return EtcdStore(s.etcd_endpoints, s.etcd_prefix, s.timeout, **files)
    from .store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path, settings.store.timeout)


def make_registry(settings: Settings, store: NodeStore, *, local: bool | None = None) -> Registry:
    """The registry over ``store``. With ``local`` (default: for the etcd backend), a
    :class:`~pxeserver.nodes.resilient.ResilientRegistry` whose node cache and journal live
    in the data dir, so that known machines boot through a store outage."""
    from .nodes.unbooted import NeverBootedBound

    c = settings.cluster
    # Who creates records: each HTTP worker, and the main process (TFTP, DHCP sightings).
    writers = settings.server.http_workers + 1
    kwargs: dict[str, Any] = {
        "hostname_pattern": c.hostname_pattern,
        "events_kept": c.events_kept,
        "heartbeat_ttl": c.heartbeat_ttl,
        "boot_timeout": c.boot_timeout,
        "never_booted": NeverBootedBound(settings.limits.never_booted, writers),
    }
    if local is None:
        local = settings.store.backend == "etcd"
    if not local:
        return Registry(store, **kwargs)
    from .nodes.cache import NodeCache
    from .nodes.journal import Journal

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
    # The config URLs' one-time secrets, under server.config_fetch_key or else the key every
    # process of this server shares in the data folder (read when first needed).
    s, folder = settings.server, settings.paths.data_dir
    key = setting_key(s.config_fetch_key) if s.config_fetch_key else file_key(folder)
    fetch = FetchSecrets(key, s.config_fetch_window, fetch_from=s.config_fetch_from,
                         connected=connected_network)  # fmt: skip
    return BootService(settings, registry, Renderer(settings), sightings, fetch, memory)


def make_memory(settings: Settings, store: NodeStore, registry: Registry) -> Memory:
    """An HTTP worker's view of the registry over ``store``, its step log and answers."""
    journal_empty = registry.journal_empty if isinstance(registry, ResilientRegistry) else None
    view = NodeView(make_feed(settings, store), journal_empty=journal_empty)
    memory = Memory(registry, view, StepLog(steps_folder(settings)), Answers(settings))
    memory.start()
    # A worker answers from memory from its first request, unless the store is slow to
    # give the view its first read (then it reads the store, as before, until it has).
    memory.wait_live(VIEW_START_S)
    return memory


def make_feed(settings: Settings, store: NodeStore, interval: float = 0.02) -> NodeFeed:
    """The store's changes as a view or the reaper's index follows them (``interval``:
    how often SQLite's change counter is asked; etcd's watch delivers at once). The
    reaper's index asks every 0.25 s: its passes are at least 0.5 s apart."""
    if settings.store.backend == "etcd":
        from .store.etcdfeed import EtcdFeed

        return EtcdFeed(store)  # type: ignore[arg-type]
    from .store.sqlite import SQLiteFeed

    return SQLiteFeed(store, interval)  # type: ignore[arg-type]


def steps_folder(settings: Settings) -> Path:
    """Where the HTTP workers note the boot steps they answered (pxeserver.nodes.steps)."""
    return settings.paths.data_dir / "steps"


def make_recorder(settings: Settings, registry: Registry) -> Recorder:
    """The main process's writer of the steps the HTTP workers noted."""
    from .nodes.batches import apply_batch

    write = (registry.apply_batch if isinstance(registry, ResilientRegistry)
             else functools.partial(apply_batch, registry))  # fmt: skip
    return Recorder(StepReader(steps_folder(settings)), write)


def configure_logging(settings: Settings) -> None:
    configure(settings.server.log_format, settings.server.log_level)


def local_state(service: BootService) -> Replayer | None:
    """For a registry with a local cache and journal (main process): teach ProxyDHCP the
    cached nodes, so that it decides about them as before a restart even while the store
    is down, and return the journal's replayer (None for a plain registry)."""
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

    def __init__(
        self, settings: Settings, *, config: Path | None = None, own_metrics: bool = False
    ) -> None:
        self.settings = settings
        self.config = config  # the settings file: the dropped user must read it too
        # ``serve``: this process and its HTTP workers count in <data_dir>/metrics, which
        # :meth:`bind` empties once it holds the data folder (tests count in memory).
        self.own_metrics = own_metrics
        self.data_lock = DataFolderLock(settings.paths.data_dir)
        self.http_claim = PortClaim("tcp", settings.server.listen, settings.server.http_port)
        self.service: BootService | None = None
        self.udp: UdpServices | None = None
        self.reaper: Reaper | None = None
        self.replayer: Replayer | None = None
        self.recorder: Recorder | None = None
        self.running = False
        self._stopping: threading.Thread | None = None
        self._stop_lock = threading.Lock()

    def bind(self) -> None:
        self._own()
        try:
            self._open()
        except BaseException:
            self.stop()
            raise

    def _own(self) -> None:
        """What this server owns, first: another server's folder or port stops us before
        we touch its metrics files, its store or its sockets."""
        self.data_lock.acquire()
        try:
            self._claim_http()
        except BaseException:
            self.data_lock.release()
            raise
        if self.own_metrics:
            # Before anything records and before the HTTP workers are spawned (they
            # inherit the folder).
            metrics.setup(self.settings.paths.data_dir / "metrics")

    def _open(self) -> None:
        """The store, the boot policy and what runs beside it; the UDP sockets bound."""
        s = self.settings
        try:
            store = make_store(s)
        except PxeError as exc:
            raise PxeError(f"cannot open the store: {exc}") from exc
        try:
            store.ping()
        except StoreUnavailable as exc:
            stats = getattr(store, "stats", {})
            if stats.get("tls") or stats.get("refused"):
                # Misconfigured, not down (a CA or certificate etcd does not take): the
                # line names the file to fix. Known machines boot from the local cache.
                log.error("the store refuses pxeserver: %s; known machines boot from the "
                          "local cache and new ones get 503 until that is fixed", exc)  # fmt: skip
            else:
                log.warning("the store does not answer yet (%s); known machines wait and "
                            "new ones get 503 until it does", exc)  # fmt: skip
        try:
            self.service = make_service(s, store)
        except BaseException:
            store.close()
            raise
        c = s.cluster
        interval = Reaper.interval_for(c.heartbeat_ttl, c.boot_timeout)
        self.reaper = Reaper(self.service.registry, interval, make_feed(s, store, 0.25))
        self.replayer = local_state(self.service)
        if self.replayer is None:  # no local cache to fill by reading every node (etcd's)
            self.service.sightings.feed = make_feed(s, store)  # the known MACs: the heads
        self.recorder = make_recorder(s, self.service.registry)
        # What a server killed earlier had answered but not written: in now, before any
        # HTTP worker answers again (into the journal if etcd does not answer).
        self.recorder.drain()
        self.udp = UdpServices(s, self.service)
        if s.server.user:
            self._check_user(s.server.user)
        self.udp.bind()

    def _claim_http(self) -> None:
        """The HTTP port: claimed against other pxeservers, and checked free of other
        programs, before granian's workers bind it with SO_REUSEPORT (which would share
        it with any process of the same user that does the same)."""
        from .host.netif import bind_error

        s = self.settings.server
        try:
            self.http_claim.acquire()
            check_tcp_port_free(s.listen, s.http_port)
        except OSError as exc:
            self.http_claim.release()
            raise bind_error("HTTP", s.listen, s.http_port, exc, "--http-port") from exc

    def _release(self) -> None:
        self.http_claim.release()
        self.data_lock.release()

    def _check_user(self, user: str) -> None:
        from .host.privileges import check_user_can_serve

        paths = self.settings.paths
        readable = [paths.tftp_root, paths.assets_dir, paths.templates_dir]
        for tls in (self.settings.store.etcd_tls, self.settings.cluster.etcd_tls):
            if tls is not None:  # HTTP workers load the settings as the user: they read these
                readable += [p for p in (tls.ca, tls.cert, tls.key) if p is not None]
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
        self._report_problems()

    def _report_problems(self) -> None:
        """What ``pxeserver check`` finds, said at start: a missing kernel, initrd,
        template or boot loader is one block that names each file and how to get it."""
        from .checks import check_settings, log_write_policy, start_report

        log_write_policy(self.settings.server)
        problems = check_settings(self.settings)
        if problems:
            log.warning("%s", start_report(self.settings, problems))

    def stop_soon(self) -> None:
        """Begin stopping in a thread and return at once (from a signal handler, so that
        the UDP services stop while granian stops its workers); :meth:`stop` waits."""
        with self._stop_lock:
            if self._stopping is None:
                self._stopping = threading.Thread(target=self._stop_parts, name="stopping")
                self._stopping.start()

    def stop(self) -> None:
        """Stop what runs and release what is open (also after a bind that failed)."""
        self.stop_soon()
        assert self._stopping is not None
        self._stopping.join()
        self._stopping = None
        if self.running:
            log.info("pxeserver stopped")
        self.running = False
        self._release()

    def _stop_parts(self) -> None:
        for part in (self.udp, self.reaper, self.recorder, self.replayer):
            if part is not None:
                part.stop()
        if self.service is not None:
            self.service.close()
        self.service = self.udp = self.reaper = self.replayer = self.recorder = None


# -- HTTP (granian) -------------------------------------------------------------------------


def _worker_app(spec: str) -> Any:
    """Build the RSGI application inside an HTTP worker process (granian calls this after
    spawning it; see :func:`pxeserver.web.server.http_server`)."""
    from .host.children import die_with_parent
    from .web import create_app
    from .web.entrance import Entrance

    args = json.loads(spec)
    die_with_parent(args["parent"])  # no orphan holding the HTTP port if we are SIGKILLed
    # The parent alone stops a worker (SIGTERM). A worker that got a second signal, the
    # terminal's Ctrl-C (SIGINT to the foreground process group) or a SIGTERM to the
    # group, could hang in granian until killed after WORKERS_KILL_TIMEOUT_S ("refused
    # to gracefully stop"). In a process group of its own, only its parent's reaches it.
    os.setpgid(0, 0)
    # The command as the operator ran it, for hints in log lines (pxeserver.hints).
    sys.argv[0] = args["program"]
    path = Path(args["config"]) if args["config"] else None
    settings, _ = load(path, args["overrides"])
    configure_logging(settings)
    service = make_service(settings, worker=True)
    return Entrance(create_app(settings, service), service, settings)


def serve(config: Path | None, overrides: Mapping[str, Any]) -> int:
    """Run the server in the foreground until SIGINT or SIGTERM."""
    from .web.server import http_server, quiet_granian

    settings, warnings = load(config, overrides)
    configure_logging(settings)
    for problem in warnings:
        log.warning("%s", problem)
    daemon = Daemon(settings, config=config, own_metrics=True)
    try:
        daemon.bind()
    except PxeError as exc:
        log.error("%s", exc)
        return 1
    # Workers are spawned, not forked: the main process runs threads (UDP services,
    # reaper), and forking a threaded process can copy held locks into the child.
    multiprocessing.set_start_method("spawn", force=True)
    spec = json.dumps({"config": str(config) if config else None, "program": sys.argv[0],
                       "overrides": dict(overrides), "parent": os.getpid()})  # fmt: skip
    server = http_server(settings)
    quiet_granian()
    # Started once granian has bound the HTTP port and before it spawns a worker: the
    # moment to stop being root, so that the workers spawn unprivileged.
    server.on_startup(daemon.start)
    server.on_shutdown(daemon.stop)
    _stop_early(server, daemon)
    try:
        server.serve(target_loader=functools.partial(_worker_app, spec), wrap_loader=False)
    except RuntimeError as exc:
        if daemon.running:
            raise
        # granian could not bind the HTTP port: another program took it after our check
        daemon.stop()
        log.error("cannot bind HTTP to %s:%d: %s; stop that program or choose another port "
                  "with --http-port", settings.server.listen, settings.server.http_port,
                  str(exc).splitlines()[0])  # fmt: skip
        return 1
    return 0


def _stop_early(server: Any, daemon: Daemon) -> None:
    """On SIGINT or SIGTERM, stop the UDP services while granian stops its HTTP workers
    (it calls its shutdown hooks only after them): a quick stop is a sum of waits."""
    granian_handler = server.signal_handler_interrupt  # set by granian at its startup

    def interrupted(*args: Any) -> None:
        granian_handler(*args)
        if daemon.running:
            daemon.stop_soon()

    server.signal_handler_interrupt = interrupted
