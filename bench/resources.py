"""Resource use: an idle ``pxeserver serve`` with 10,000 registered nodes, SQLite and etcd.

    .venv/bin/python -m bench.resources               # as root; 10,000 nodes, 30 s idle
    .venv/bin/python -m bench.resources --quick       # as root; 1,000 nodes, 10 s

The registry is filled before the server starts, one document per node as a booted node
leaves it (events dhcp, ipxe, cloud-config, ready; state ``ready``), through pxeserver's
own store classes. The server then starts as an operator starts it (ProxyDHCP, TFTP and
HTTP on the standard ports, in a network namespace of the benchmark's own, as the boot
storm does), settles for a few seconds, and is watched while nothing asks it anything:
CPU seconds of its whole process tree over the window, and at the end its RSS and PSS,
summed over the tree and per process (``/proc/PID/smaps_rollup``). etcd's own process is
not counted in pxeserver's figures; its RSS is reported beside them. The nodes'
``heartbeat_ttl`` is one hour here, so that the reaper finds nothing to expire
while the window runs (with the default 90 s, nodes filled early would turn ``lost``
during the window and the reaper would write them).

The peak RSS during the 1,000-machine boot storm is reported by :mod:`bench.storm`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.benchlib import (
    REPO,
    TreeMeter,
    Veth,
    process_name,
    row,
    rss_bytes,
    smaps_rollup,
    tree,
)
from bench.storm_stacks import PxeserverStack, make_assets

MB = 1e6
FILL_PROBES = 20  # taken hostnames in a row before a create starts again
FILL_RESTARTS = 100


def fill(config: Path, n: int) -> None:
    """Register ``n`` ready nodes in the store the settings name (run in the namespace)."""
    from pxeserver.config import load
    from pxeserver.daemon import make_registry, make_store
    from pxeserver.model import MAC, Event, EventKind, Node, State

    settings, _ = load(config, {})
    store = make_store(settings)
    registry = make_registry(settings, store)
    now = time.time()

    def one(i: int) -> None:
        mac = MAC.parse(f"02:00:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:"
                        f"{(i >> 8) & 255:02x}:{i & 255:02x}")  # fmt: skip
        steps = [(EventKind.DHCP, State.DISCOVERED, "ProxyDHCP DISCOVER on port 67: BIOS"),
                 (EventKind.IPXE, State.BOOTING, "profile storm"),
                 (EventKind.CLOUD_CONFIG, State.CONFIGURED, "profile storm"),
                 (EventKind.READY, State.READY, "")]  # fmt: skip
        events = tuple(Event(k, now - 60 + j, s, d) for j, (k, s, d) in enumerate(steps))
        node = Node(
            mac=mac,
            uuid=None,
            arch="i386",
            platform="pcbios",
            ip="192.0.2.2",
            state=State.READY,
            first_seen=now - 60,
            last_seen=now,
            last_heartbeat=now,
            boot_count=1,
            events=events,
            recent_ids=tuple(e.id for e in events),
        )
        for _ in range(FILL_RESTARTS):
            try:
                store.create(node, probing(registry._hostname_for(mac)))
                return
            except _Behind:
                restarts.append(i)  # read the counter again: start at the frontier
        raise RuntimeError(f"{mac}: no hostname after {FILL_RESTARTS} restarts")

    restarts: list[int] = []
    workers = 8 if settings.store.backend == "etcd" else 1
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(n)))
    store.close()
    if restarts:
        print(f"resources: fill: {len(restarts)} creates restarted after {FILL_PROBES} taken "
              "hostnames in a row", file=sys.stderr, flush=True)  # fmt: skip


class _Behind(Exception):
    """A create probed ``FILL_PROBES`` taken hostnames: its counter reading is stale."""


def probing(hostname_for: Callable[[int], str]) -> Callable[[int], str]:
    """``hostname_for``, giving up (:class:`_Behind`) after ``FILL_PROBES`` probes.

    The etcd store's create reads the hostname counter once, then tries index + 1, + 2, …
    one transaction each, without reading the counter again. With 8 threads creating at
    once, a create that lost a race probes behind a frontier that the others move at
    least as fast as it probes, so it may never catch up: 1,000 probes, then
    ``HostnameTaken`` although most hostnames are free (docs/BENCHMARKS.md, resources).
    Giving up early and creating again reads the counter afresh.
    """
    calls = 0

    def probe(index: int) -> str:
        nonlocal calls
        calls += 1
        if calls > FILL_PROBES:
            raise _Behind
        return hostname_for(index)

    return probe


def breakdown(root: int) -> list[dict[str, Any]]:
    """Every process of the tree: what it is, its RSS, PSS and private memory."""
    out = []
    for pid in tree(root):
        sm = smaps_rollup(pid)
        out.append({
            "pid": pid,
            "what": process_name(pid),
            "rss_mb": rss_bytes(pid) / MB,
            "pss_mb": sm.get("Pss", 0) / MB,
            "private_mb": (sm.get("Private_Clean", 0) + sm.get("Private_Dirty", 0)) / MB,
        })  # fmt: skip
    return out


def idle_once(veth: Veth, base: Path, files: dict[str, Any], etcd: bool, nodes: int,
              settle: float, window: float) -> dict[str, Any]:  # fmt: skip
    work = base / f"{'etcd' if etcd else 'sqlite'}-{time.monotonic_ns()}"
    stack = PxeserverStack(veth, work, files, etcd=etcd)
    stack.heartbeat_ttl = 3600

    def prefill(config: Path) -> None:
        t0 = time.monotonic()
        subprocess.run(
            veth.exec_server([sys.executable, "-m", "bench.resources", "fill", "--config",
                              str(config), "--nodes", str(nodes)]),
            cwd=REPO, check=True, timeout=1800,
        )  # fmt: skip
        print(f"resources: {nodes} nodes into {stack.name} in {time.monotonic() - t0:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip

    stack.prefill = prefill
    stack.start()
    try:
        pid = stack.procs["pxeserver"].pid
        time.sleep(settle)
        meter = TreeMeter([pid], interval=0.5)
        time.sleep(window)
        cpu, peak = meter.stop()
        procs = breakdown(pid)
        etcd_rss = rss_bytes(stack.procs["etcd"].pid) / MB if etcd else None
        stack.check_alive()
    finally:
        stack.stop()
    return {
        "cpu_s": cpu,
        "window_s": window,
        "rss_mb": sum(p["rss_mb"] for p in procs),
        "pss_mb": sum(p["pss_mb"] for p in procs),
        "peak_rss_mb": peak / MB,
        "processes": procs,
        "etcd_rss_mb": etcd_rss,
    }


def run(runs: int, quick: bool, *, nodes: int | None = None,
        backends: tuple[str, ...] = ("sqlite", "etcd")) -> list[dict[str, Any]]:  # fmt: skip
    nodes = nodes or (1000 if quick else 10_000)
    settle, window = (3.0, 10.0) if quick else (5.0, 30.0)
    rows: list[dict[str, Any]] = []
    veth = Veth()
    try:
        with tempfile.TemporaryDirectory(prefix="pxeserver-idle-", dir="/var/tmp") as tmp:
            base = Path(tmp)
            os.chmod(base, 0o755)
            files = make_assets(base / "files", 1, 1)
            for etcd in [b == "etcd" for b in backends]:
                name = "pxeserver (etcd)" if etcd else "pxeserver (sqlite)"
                results = []
                for i in range(runs):
                    r = idle_once(veth, base, files, etcd, nodes, settle, window)
                    results.append(r)
                    report(name, i, runs, r)
                case = f"{nodes} nodes, idle {window:.0f} s"
                rows += [
                    row("resources", case, name, "RSS, whole tree", "MB",
                        [r["rss_mb"] for r in results], higher_is_better=False),
                    row("resources", case, name, "PSS, whole tree", "MB",
                        [r["pss_mb"] for r in results], higher_is_better=False),
                    row("resources", case, name, "CPU while idle", "s",
                        [r["cpu_s"] for r in results], higher_is_better=False),
                    row("resources", case, name, "processes", "count",
                        [len(r["processes"]) for r in results], higher_is_better=False),
                ]  # fmt: skip
                if etcd:
                    rows.append(row("resources", case, "etcd (beside pxeserver)", "RSS", "MB",
                                    [r["etcd_rss_mb"] for r in results],
                                    higher_is_better=False))  # fmt: skip
    finally:
        veth.delete()
    return rows


def report(name: str, i: int, runs: int, r: dict[str, Any]) -> None:
    print(f"resources {name} run {i + 1}/{runs}: RSS {r['rss_mb']:.1f} MB, PSS "
          f"{r['pss_mb']:.1f} MB, CPU {r['cpu_s']:.2f} s in {r['window_s']:.0f} s"
          + (f", etcd RSS {r['etcd_rss_mb']:.0f} MB" if r["etcd_rss_mb"] else ""),
          file=sys.stderr, flush=True)  # fmt: skip
    for p in r["processes"]:
        print(
            f"  {p['pid']:>7} RSS {p['rss_mb']:6.1f} PSS {p['pss_mb']:6.1f} private "
            f"{p['private_mb']:6.1f} MB  {p['what'][:110]}",
            file=sys.stderr,
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command")
    f = sub.add_parser("fill", help="register nodes (run inside the server's namespace)")
    f.add_argument("--config", type=Path, required=True)
    f.add_argument("--nodes", type=int, required=True)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nodes", type=int, default=0)
    ap.add_argument("--backends", default="sqlite,etcd")
    args = ap.parse_args(argv)
    if args.command == "fill":
        fill(args.config, args.nodes)
        return 0
    rows = run(args.runs, args.quick, nodes=args.nodes or None,
               backends=tuple(args.backends.split(",")))  # fmt: skip
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
