"""Registry writes: compare-and-swap updates per second and their p99, into etcd and SQLite.

    .venv/bin/python -m bench.registry                  # 3 runs of 3 s per case
    .venv/bin/python -m bench.registry --runs 1 --quick

Each case runs one or two worker processes (``python -m bench.registry --worker …``),
each building the store and :class:`pxeserver.nodes.registry.Registry` exactly as ``pxeserver
serve`` does and calling ``Registry.apply`` from several threads for a fixed time: an
``ipxe`` change that counts a boot, what serving ``/ipxe`` writes. Cases:

- ``1 proc × 1 thread``: one writer after the other (latency bound);
- ``1 proc × 8 threads``: one server under load (the goal's "one server");
- ``2 procs × 8 threads, distinct MACs``: two servers on one store, each its own nodes;
- ``2 procs × 8 threads, shared MACs``: both on the same 32 nodes, so compare-and-swap
  conflicts and retries happen;
- ``batches of 1,000 steps, as the recorder writes``: since boot steps are written behind
  the answer, ``serve``'s main process writes them as ``pxeserver.daemon.make_recorder``
  does (``apply_batch``: one transaction per ``MAX_BATCH`` nodes, each node's steps folded,
  and for etcd through the outage layer's journal), one round after the other, each
  round one step of each of 1,000 nodes, starting from the nodes as the last round wrote
  them (the recorder's memory of them): the goal's "registry writes, one server".

The nodes exist before the clock starts (updates, not creates). Lost updates are counted,
not assumed: every apply increments the node's ``boot_count`` inside the
compare-and-swap, so afterwards the sum of ``boot_count`` over the nodes must have grown
by exactly the number of applies the workers saw succeed; any difference is an error.
etcd is Debian's etcd 3.4, one member on loopback with its data on the machine's disk
(fsync as shipped); SQLite is the embedded store's file in WAL mode.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import benchlib

NAME = "registry"
THREADS = 8
HOT_MACS = 32
UPDATE_GOALS = {"etcd": 1000.0, "sqlite": 2000.0}  # one Registry.apply after the other
BATCH_GOAL = 2000.0  # boot steps written behind the answer, either store (issue 13)
BATCH_STEPS = 1000


@dataclass(frozen=True)
class Case:
    name: str
    procs: int
    threads: int
    shared: bool
    batched: bool = False


CASES = (
    Case("1 proc × 1 thread", 1, 1, False),
    Case(f"1 proc × {THREADS} threads", 1, THREADS, False),
    Case(f"2 procs × {THREADS} threads, distinct MACs", 2, THREADS, False),
    Case(f"2 procs × {THREADS} threads, shared MACs", 2, THREADS, True),
    Case("batches, one step of each node, as the recorder writes", 1, 1, False, True),
)


def mac_of(i: int) -> str:
    return "02:00:" + ":".join(f"{(i >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


def make_store(kind: str, where: str) -> Any:
    if kind == "etcd":
        from pxeserver.store.etcd import EtcdStore

        return EtcdStore((where,), timeout=10.0)
    from pxeserver.store.sqlite import SQLiteStore

    return SQLiteStore(Path(where), timeout=10.0)


class CountingStore:
    """The real store, counting its calls (each one a round trip) and lost CAS races."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls = 0
        self.conflicts = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            from pxeserver.errors import Conflict

            with self._lock:
                self.calls += 1
            try:
                return attr(*args, **kwargs)
            except Conflict:
                with self._lock:
                    self.conflicts += 1
                raise

        return counted


def server_registry(kind: str, store: Any, data_dir: Path) -> Any:
    """The registry ``pxeserver serve`` builds over ``store`` (for etcd: with its local
    node cache and journal in ``data_dir``, see pxeserver/nodes/resilient.py)."""
    from pxeserver.config import load
    from pxeserver.daemon import make_registry

    overrides: dict[str, Any] = {"paths.data_dir": str(data_dir), "store.backend": kind}
    if kind == "etcd":
        overrides["store.etcd_endpoints"] = ["http://127.0.0.1:2379"]  # not used: store given
    settings, _ = load(None, overrides)
    return make_registry(settings, store)


# -- the worker process -------------------------------------------------------------------


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Apply changes from ``threads`` threads until ``start_at + duration``; report."""
    from pxeserver.model import MAC, EventKind
    from pxeserver.nodes.registry import Change

    store = CountingStore(make_store(spec["store"], spec["where"]))
    registry = server_registry(spec["store"], store, Path(spec["data_dir"]))
    macs = [MAC.parse(mac_of(i)) for i in spec["macs"]]
    latencies: list[list[float]] = [[] for _ in range(spec["threads"])]
    errors = [0] * spec["threads"]
    change = Change(EventKind.IPXE, "bench", count_boot=True)
    registry.get(macs[0])  # connect before the clock starts
    calls0 = store.calls

    def loop(t: int) -> None:
        rng = random.Random(spec["seed"] * 1000 + t)
        end = spec["start_at"] + spec["duration"]
        while time.time() < spec["start_at"]:
            time.sleep(0.001)
        while time.time() < end:
            t0 = time.perf_counter()
            try:
                registry.apply(rng.choice(macs), change, create=False)
            except Exception as exc:  # noqa: BLE001 - counted and reported, never silent
                errors[t] += 1
                if errors[t] <= 3:
                    print(f"apply failed: {exc!r}", file=sys.stderr)
                continue
            latencies[t].append(time.perf_counter() - t0)

    if spec["batched"]:
        loop = batches(registry, macs, latencies[0], errors, spec)
    threads = [threading.Thread(target=loop, args=(t,)) for t in range(spec["threads"])]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    registry.close()
    lat = [x for per in latencies for x in per]
    return {
        "applies": len(lat) * (min(BATCH_STEPS, len(macs)) if spec["batched"] else 1),
        "errors": sum(errors),
        "conflicts": store.conflicts,
        "calls": store.calls - calls0,
        "p99_ms": benchlib.percentile(lat, 99) * 1000,
        "p50_ms": benchlib.percentile(lat, 50) * 1000,
    }


def batches(registry: Any, macs: list[Any], latencies: list[float], errors: list[int],
            spec: dict[str, Any]) -> Any:  # fmt: skip
    """The batched case's loop: rounds of one step of each of ``BATCH_STEPS`` nodes,
    written as ``serve``'s recorder writes them; a round's latency is its write's."""
    from pxeserver.model import EventKind, new_event_id
    from pxeserver.nodes.batches import apply_batch
    from pxeserver.nodes.registry import Change
    from pxeserver.nodes.resilient import ResilientRegistry

    write = (registry.apply_batch if isinstance(registry, ResilientRegistry)
             else functools.partial(apply_batch, registry))  # fmt: skip
    round_macs = macs[:BATCH_STEPS]

    def loop(t: int) -> None:
        known: dict[Any, Any] = {}
        while time.time() < spec["start_at"]:
            time.sleep(0.001)
        while time.time() < spec["start_at"] + spec["duration"]:
            now = time.time()
            steps = [(mac, Change(EventKind.IPXE, "bench", count_boot=True, at=now,
                                  event_id=new_event_id(), answered=True))
                     for mac in round_macs]  # fmt: skip
            t0 = time.perf_counter()
            result = write(steps, known)
            latencies.append(time.perf_counter() - t0)
            if result.failed or result.dropped or result.journalled:
                errors[t] += 1
                if errors[t] <= 3:
                    print(f"a round was not all written: {len(result.failed)} failed, "
                          f"{len(result.dropped)} dropped, {len(result.journalled)} "
                          "journalled", file=sys.stderr)  # fmt: skip
            known = dict(result.versions)

    return loop


# -- the parent ---------------------------------------------------------------------------


def populate(kind: str, where: str, count: int) -> None:
    from pxeserver.config import load
    from pxeserver.daemon import make_registry
    from pxeserver.model import MAC, EventKind
    from pxeserver.nodes.registry import Change

    store = make_store(kind, where)
    registry = make_registry(load(None)[0], store, local=False)
    for i in range(count):
        mac = MAC.parse(mac_of(i))
        if registry.get(mac) is None:
            registry.apply(mac, Change(EventKind.DHCP, "bench"))
    store.close()


def boot_counts(kind: str, where: str) -> int:
    store = make_store(kind, where)
    try:
        return sum(v.node.boot_count for v in store.scan())
    finally:
        store.close()


def one(
    kind: str,
    where: str,
    case: Case,
    duration: float,
    macs_per_proc: int,
    seed: int,
    workdir: Path,
) -> dict[str, Any]:
    """One measurement of ``case``: all workers at once; totals over the workers."""
    before = boot_counts(kind, where)
    start_at = time.time() + 3.0  # the workers import and connect meanwhile
    procs = []
    for p in range(case.procs):
        macs = (
            list(range(HOT_MACS))
            if case.shared
            else list(range(p * macs_per_proc, (p + 1) * macs_per_proc))
        )
        data_dir = Path(tempfile.mkdtemp(prefix=f"registry-{kind}-{p}-", dir=workdir))
        spec = {
            "data_dir": str(data_dir),
            "store": kind,
            "where": where,
            "macs": macs,
            "threads": case.threads,
            "start_at": start_at,
            "duration": duration,
            "seed": seed * 10 + p,
            "batched": case.batched,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.registry", "--worker", json.dumps(spec)],
                cwd=benchlib.REPO,
                stdout=subprocess.PIPE,
                text=True,
                process_group=0,
            )
        )
    outs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=duration + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"registry worker exited {proc.returncode}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    applies = sum(o["applies"] for o in outs)
    lost = applies - (boot_counts(kind, where) - before)
    return {
        "rate": applies / duration,
        "p99_ms": max(o["p99_ms"] for o in outs),
        "errors": sum(o["errors"] for o in outs) + abs(lost),
        "lost": lost,
        "conflicts": sum(o["conflicts"] for o in outs),
        "calls_per_apply": sum(o["calls"] for o in outs) / max(applies, 1),
    }


def run(
    runs: int = 3, quick: bool = False, stores: tuple[str, ...] = ("etcd", "sqlite")
) -> list[benchlib.Row]:
    duration = 1.0 if quick else 3.0
    macs_per_proc = 200 if quick else 1000
    rows: list[benchlib.Row] = []
    with tempfile.TemporaryDirectory(prefix="pxeserver-bench-registry-") as tmp:
        base = Path(tmp)
        etcd, url = benchlib.start_etcd(base) if "etcd" in stores else (None, "")
        try:
            places = {"etcd": url, "sqlite": str(base / "registry.sqlite3")}
            for kind in stores:
                where = places[kind]
                benchlib.log(f"registry: {kind}: registering {2 * macs_per_proc} nodes")
                populate(kind, where, 2 * macs_per_proc)
                for case in CASES:
                    samples = [
                        one(kind, where, case, duration, macs_per_proc, i, base)
                        for i in range(runs)
                    ]
                    for s in samples:
                        benchlib.log(
                            f"registry {kind:6} {case.name:40} {s['rate']:8.0f}/s "
                            f"p99 {s['p99_ms']:6.1f} ms, {s['calls_per_apply']:.2f} calls/apply, "
                            f"{s['conflicts']} conflicts, lost {s['lost']}, errors {s['errors']}"
                        )
                    errors = sum(s["errors"] for s in samples)
                    bench = f"registry CAS writes ({kind})"
                    rate = benchlib.row(
                        bench,
                        case.name,
                        kind,
                        "updates/s",
                        "1/s",
                        [s["rate"] for s in samples],
                        errors=errors,
                        higher_is_better=True,
                    )
                    if case.batched:
                        benchlib.set_ratio(rate, BATCH_GOAL, f"goal {BATCH_GOAL:,.0f}/s")
                    elif case.procs == 1 and case.threads > 1:
                        benchlib.set_ratio(
                            rate, UPDATE_GOALS[kind], f"goal {UPDATE_GOALS[kind]:,.0f}/s"
                        )
                    rows.append(rate)
                    rows.append(
                        benchlib.row(
                            bench,
                            case.name,
                            kind,
                            "p99 latency",
                            "ms",
                            [s["p99_ms"] for s in samples],
                            errors=errors,
                            higher_is_better=False,
                        )
                    )
                    rows.append(
                        benchlib.row(
                            bench,
                            case.name,
                            kind,
                            "store calls per apply",
                            "calls",
                            [s["calls_per_apply"] for s in samples],
                            higher_is_better=False,
                        )
                    )
                    rows.append(
                        benchlib.row(
                            bench,
                            case.name,
                            kind,
                            "CAS conflicts",
                            "count",
                            [float(s["conflicts"]) for s in samples],
                            higher_is_better=False,
                        )
                    )
        finally:
            if etcd is not None:
                etcd.stop()
    return rows


NOTES = (
    "Each apply is what serving /ipxe writes for a known node (an ipxe event counting a "
    "boot). errors include lost updates: boot_count summed over the nodes afterwards must "
    "grow by exactly the applies the workers counted."
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 s per case, 400 nodes")
    ap.add_argument("--stores", default="etcd,sqlite", help="comma-separated: etcd, sqlite")
    ap.add_argument("--out", type=Path, default=benchlib.RESULTS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    rows = run(args.runs, args.quick, tuple(args.stores.split(",")))
    benchlib.write(NAME, rows, NOTES, args.out)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
