"""Prometheus metrics: the named series every part of pxeserver records into.

Process layout matters here. The HTTP workers are separate (spawned) processes and TFTP and
ProxyDHCP run in the main process, so a counter kept in one process's memory would show a
different number depending on which worker answers ``/metrics``. pxeserver therefore uses
prometheus_client's multiprocess mode: every process writes its samples to memory-mapped
files in one folder (``<data_dir>/metrics``, emptied when ``serve`` starts) and ``/metrics``
sums the files of all processes. Node counts by state are not kept here at all: they are
read from the store at scrape time (see :mod:`pxeserver.web.metrics`), which every process
shares anyway.

prometheus_client picks its storage when a metric's first value is created, so the metrics
below are declared now and built on first use: :func:`setup` must run (in the main process,
before anything records) for the multiprocess mode, and the HTTP workers inherit the folder
through ``PROMETHEUS_MULTIPROC_DIR``. Without :func:`setup` (tests, ``pxeserver render``)
they count in the process's own memory.

Use from any module: ``metrics.tftp_transfers.inc()``,
``metrics.tftp_errors.labels(reason="timeout").inc()``, ``metrics.journal_depth.set(n)``;
on a hot path, ``metrics.boots_started.child(name).inc()`` (the same series, kept).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Boot steps take from well under a second (iPXE → cloud-config) to many minutes (a
# node's first boot to fleet being up); the buckets cover both.
STEP_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)

_lock = threading.Lock()
_registry: Any = None


def local_registry() -> Any:
    """The registry this process's metrics live in (used for scrapes without multiprocess)."""
    global _registry
    with _lock:
        if _registry is None:
            from prometheus_client import CollectorRegistry

            _registry = CollectorRegistry(auto_describe=True)
        return _registry


class _Lazy:
    """A metric declared now and built on first use (see the module docstring)."""

    def __init__(self, kind: str, name: str, doc: str, **kwargs: Any) -> None:
        self.kind = kind
        self.name = name
        self.doc = doc
        self.kwargs = kwargs
        self._metric: Any = None
        self._build_lock = threading.Lock()
        self._children: dict[tuple[str, ...], Any] = {}

    def _get(self) -> Any:
        if self._metric is None:
            with self._build_lock:
                if self._metric is None:
                    import prometheus_client

                    cls: Callable[..., Any] = getattr(prometheus_client, self.kind)
                    self._metric = cls(
                        self.name, self.doc, registry=local_registry(), **self.kwargs
                    )
        return self._metric

    def child(self, *values: str) -> Any:
        """``labels(*values)``, kept: the series of these label values is looked up once per
        process, not on each answer (``labels`` checks its arguments under a lock). For
        labels of a few values: a profile's name, a reason."""
        found = self._children.get(values)
        if found is None:
            found = self._children.setdefault(values, self._get().labels(*values))
        return found

    def __getattr__(self, attr: str) -> Any:
        # labels(), inc(), observe(), set() … of the real metric.
        return getattr(self._get(), attr)


def _counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
    return _Lazy("Counter", name, doc, labelnames=labels)


# -- boots (HTTP side, recorded by the boot service) ----------------------------------------------
boots_started = _counter(
    "pxeserver_boots_started", "Boots started: iPXE scripts served for a profile", ("profile",)
)
boots_completed = _counter(
    "pxeserver_boots_completed", "Boots completed: nodes that phoned home ready", ("profile",)
)
boots_from_disk = _counter(
    "pxeserver_boots_from_disk",
    "Boots told to start from the local disk: nodes whose disk holds their profile",
    ("profile",),
)
configs_refused = _counter(
    "pxeserver_configs_refused",
    "Config fetches refused (possible spoofing): missing, wrong, expired, address (asked "
    "from another address than the script's) or used (a second fetch) secret",
    ("reason",),
)
boot_step_seconds: Any = _Lazy(
    "Histogram",
    "pxeserver_boot_step_seconds",
    "Time a boot step took: from the node's previous step of the same boot to this one",
    labelnames=("step",),
    buckets=STEP_BUCKETS,
)

# Boot steps answered by the HTTP workers and written behind the answer (pxeserver.nodes.recorder).
boot_answers = _counter(
    "pxeserver_boot_answers",
    "iPXE scripts and cloud-configs served, by where the node came from: memory (the HTTP "
    "worker's view; the step written behind the answer) or store (read and written first)",
    ("source",),
)
steps_recorded = _counter(
    "pxeserver_steps_recorded",
    "Boot steps the HTTP workers answered from memory, by what became of them: written to "
    "the store, journalled (the store did not answer), or dropped (the node was forgotten)",
    ("outcome",),
)
step_delay_seconds: Any = _Lazy(
    "Histogram",
    "pxeserver_step_delay_seconds",
    "Per write of boot steps: the time its oldest step waited, from its answer to its record "
    "in the store (or the journal)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# -- TFTP (main process; recorded by pxeserver.tftp.server) ---------------------------------------
tftp_transfers = _counter("pxeserver_tftp_transfers", "TFTP read transfers completed", ("result",))
tftp_bytes = _counter("pxeserver_tftp_bytes", "Bytes sent in TFTP DATA packets")
tftp_errors = _counter("pxeserver_tftp_errors", "TFTP errors sent or seen, by reason", ("reason",))

# -- ProxyDHCP (main process; recorded by pxeserver.dhcp.proxy) -----------------------------------
dhcp_offers = _counter(
    "pxeserver_dhcp_offers", "ProxyDHCP offers and PXE boot-server ACKs sent", ("port",)
)
dhcp_ignored = _counter(
    "pxeserver_dhcp_ignored", "DHCP packets ignored (not PXE, malformed, excluded …)", ("reason",)
)

# -- limits (pxeserver.tftp.server, pxeserver.nodes.sightings; docs/RELIABILITY.md "Limits") ------
limited = _counter(
    "pxeserver_limited",
    "Requests and sightings a limit dropped or turned away: tftp-request (rate per address), "
    "tftp-session (per address or in all), new-mac (sightings of unknown MACs), "
    "http-client (HTTP requests in flight from one address)",
    ("what",),
)

never_booted_dropped = _counter(
    "pxeserver_never_booted_dropped",
    "Records of machines that never booted, forgotten (the oldest first) to keep at most "
    "limits.never_booted of them",
)

# -- store and journal ----------------------------------------------------------------------------
store_errors = _counter(
    "pxeserver_store_errors", "Store calls that failed (store unavailable), by where", ("where",)
)
journal_depth: Any = _Lazy(
    "Gauge",
    "pxeserver_journal_depth",
    "Writes waiting in the local journal for the store to come back",
    multiprocess_mode="mostrecent",
)
journal_entries = _counter(
    "pxeserver_journal_entries",
    "Writes the local journal took while the store was down, and what became of them",
    ("outcome",),  # journalled, replayed, dropped
)


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def setup(folder: Path) -> Path:
    """Switch this process (and the processes it spawns) to multiprocess metrics in ``folder``.

    The folder is emptied: counters start at zero with each ``serve``, and files of dead
    processes from an earlier run must not be summed in. Call before anything records.
    """
    folder = Path(folder).resolve()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    import prometheus_client.values as values

    # In case prometheus_client was imported before the variable was set.
    values.ValueClass = values.get_value_class()
    return folder


def exposition(extra: list[Any] | None = None) -> tuple[bytes, str]:
    """The text a scrape returns: this server's metrics, summed over its processes."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(local_registry())
    for collector in extra or ():
        one = CollectorRegistry()
        one.register(collector)
        body += generate_latest(one)
    return body, CONTENT_TYPE_LATEST
