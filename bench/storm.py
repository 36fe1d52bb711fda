"""Boot storm: N simulated machines boot at once, against pxeserver and the static C stack.

    .venv/bin/python -m bench.storm                      # N = 100, 500, 1000; 1 run each
    .venv/bin/python -m bench.storm --n 100 --runs 3 --modes burst

Each simulated machine does what PXE firmware and iPXE do (see :mod:`bench.storm_client`):
ProxyDHCP DISCOVER, TFTP of ``undionly.kpxe``, ``/boot.ipxe``, its ``/ipxe`` script, an
8 MiB kernel and a 24 MiB initrd over HTTP, its ``/cloud-config``, then POST ``ready``.
Machines start all at once (``burst``) or in ten waves a second apart (``waves``: N/10
machines a second, 100 a second for N = 1000).

The stacks (see :mod:`bench.storm_stacks`), each started fresh for every storm so every
machine is new to it: pxeserver with its embedded SQLite store, pxeserver with etcd, and
the static stack (dnsmasq proxy-DHCP + tftpd-hpa + nginx serving the same bytes
pre-rendered). Servers and machines sit in two network namespaces the benchmark creates,
joined by a veth pair (192.0.2.1 and 192.0.2.2), and deletes at the end.

Reported per stack and storm: time from the first machine's start to the last one's
``ready``; p50 and p99 of each step; machines that failed (the error rows say where);
the stack's CPU seconds and peak RSS (its whole process tree from /proc, etcd included
for pxeserver with etcd); and the client's own CPU, which shares the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.benchlib import REPO, TreeMeter, Veth, add_ratios, machine, percentile, row
from bench.storm_client import STEPS, Spec, identity
from bench.storm_stacks import (
    HTTP_PORT,
    PxeserverStack,
    Stack,
    StaticStack,
    make_assets,
    prerender,
)

PEER = "static stack"
KERNEL_MB, INITRD_MB = 8, 24
WAVES, INTERVAL = 10, 1.0  # N machines in 10 waves a second apart: 100/s for N = 1000
MAC_BASE = 0x525400000000
ALL_STACKS = ("sqlite", "etcd", "static-assets", "static")


def storm_once(
    veth: Veth, stack: Stack, files: dict[str, Any], n: int, mode: str
) -> dict[str, Any]:
    """Start ``stack``, run one storm of ``n`` machines against it, stop it; the figures."""
    stack.start()
    try:
        spec = Spec(
            server=veth.SERVER_IP, client_ip=veth.CLIENT_IP, http_port=HTTP_PORT, tftp_port=69,
            dhcp_port=67, pxe_port=4011, n=n, mode=mode, wave=max(1, n // WAVES),
            interval=INTERVAL,
            device=veth.client_dev, boot_sha256=files["boot_sha256"],
            kernel_size=files["kernel_size"], initrd_size=files["initrd_size"],
            mac_base=MAC_BASE,
        )  # fmt: skip
        before = udp_counters(veth)
        meter = TreeMeter(list(stack.pids().values()))
        out = subprocess.run(
            veth.exec_client([sys.executable, "-m", "bench.storm_client", "--spec",
                              json.dumps(spec.__dict__)]),
            capture_output=True, text=True, cwd=REPO, timeout=3600, check=False,
        )  # fmt: skip
        cpu, peak = meter.stop()
        peak_pss = meter.peak_pss
        after = udp_counters(veth)
        if out.returncode != 0:
            raise RuntimeError(f"the storm client failed ({out.returncode}):\n{out.stderr[-3000:]}")
        stack.check_alive()
    finally:
        stack.stop()
    result = json.loads(out.stdout)
    result["server_cpu_s"] = cpu
    result["server_peak_rss"] = peak
    result["server_peak_pss"] = peak_pss
    result["udp_drops"] = {k: after[k] - before[k] for k in after}
    return result


def udp_counters(veth: Veth) -> dict[str, int]:
    """UDP datagrams dropped for a full receive buffer in each namespace (/proc/net/snmp),
    and packets the kernel's per-CPU backlog dropped (/proc/net/softnet_stat, whole host)."""
    out = {}
    for side, ns in (("server", veth.server_ns), ("machines", veth.client_ns)):
        text = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        udp = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
        fields = dict(zip(udp[0][1:], (int(x) for x in udp[1][1:])))
        out[f"{side} rcvbuf"] = fields.get("RcvbufErrors", 0)
    backlog = 0
    for line in Path("/proc/net/softnet_stat").read_text().splitlines():
        backlog += int(line.split()[1], 16)
    out["backlog (host)"] = backlog
    return out


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Per-run figures: time to all ready, step percentiles, errors by step."""
    machines = result["machines"]
    ok = [m for m in machines if m["error"] is None]
    errors = Counter(m["error_step"] for m in machines if m["error"] is not None)
    messages = Counter(m["error"] for m in machines if m["error"] is not None)
    steps = {}
    for step in STEPS:
        values = [m["steps"][step] for m in machines if step in m["steps"]]
        steps[step] = (percentile(values, 50), percentile(values, 99))
    return {
        "last_ready_s": max((m["end"] for m in ok), default=float("nan")),
        "steps": steps,
        "errors": sum(errors.values()),
        "errors_by_step": dict(errors),
        "error_messages": messages.most_common(5),
        "dhcp_retries": sum(m["dhcp_retries"] for m in machines),
        "tftp_retries": sum(m["tftp_retries"] for m in machines),
        "server_cpu_s": result["server_cpu_s"],
        "server_peak_rss_mb": result["server_peak_rss"] / 1e6,
        "server_peak_pss_mb": result["server_peak_pss"] / 1e6,
        "client_cpu_s": result["client_cpu_s"],
        "wall_s": result["wall_s"],
        "udp_drops": result["udp_drops"],
    }


def rows_for(case: str, server: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    errors = sum(r["errors"] for r in runs)

    def lower(metric: str, unit: str, samples: list[float], errors: int = 0) -> dict[str, Any]:
        """Every storm figure is a time, a footprint or a count: lower is better."""
        return row("storm", case, server, metric, unit, samples, errors=errors,
                   higher_is_better=False)  # fmt: skip

    # Time to all ready counts only storms in which every machine got there.
    out = [lower("time to all ready", "s", [r["last_ready_s"] for r in runs], errors)]
    for step in STEPS:
        out.append(lower(f"{step} p50", "ms", [r["steps"][step][0] * 1000 for r in runs]))
        out.append(lower(f"{step} p99", "ms", [r["steps"][step][1] * 1000 for r in runs]))
    out.append(lower("server CPU", "s", [r["server_cpu_s"] for r in runs]))
    out.append(lower("server peak RSS", "MB", [r["server_peak_rss_mb"] for r in runs]))
    out.append(lower("server peak PSS", "MB", [r["server_peak_pss_mb"] for r in runs]))
    out.append(lower("client CPU", "s", [r["client_cpu_s"] for r in runs]))
    out.append(lower("DHCP+TFTP retries", "count",
                     [r["dhcp_retries"] + r["tftp_retries"] for r in runs]))  # fmt: skip
    return out


def make_stack(kind: str, veth: Veth, work: Path, files: dict[str, Any], root: Path) -> Stack:
    if kind == "static":
        return StaticStack(veth, work, files, root)
    if kind == "static-assets":
        return PxeserverStack(veth, work, files, etcd=False, static_assets=True)
    return PxeserverStack(veth, work, files, etcd=kind == "etcd")


def run(runs: int, quick: bool, *, sizes: tuple[int, ...] | None = None,
        modes: tuple[str, ...] = ("burst", "waves"),
        stacks: tuple[str, ...] = ALL_STACKS) -> list[dict[str, Any]]:  # fmt: skip
    """Every storm ``runs`` times against every stack; result rows (see bench.common)."""
    sizes = sizes or ((20, 50) if quick else (100, 500, 1000))
    rows: list[dict[str, Any]] = []
    veth = Veth()
    try:
        with tempfile.TemporaryDirectory(prefix="pxeserver-storm-", dir="/var/tmp") as tmp:
            base = Path(tmp)
            os.chmod(base, 0o755)
            files = make_assets(base / "files", KERNEL_MB, INITRD_MB)
            ids = [identity(MAC_BASE, i) for i in range(max(sizes))]
            ips = veth.add_machines(max(sizes))
            root = prerender(base / "render", files, veth, [i[0] for i in ids],
                             [i[3] for i in ids], ips)  # fmt: skip
            for n in sizes:
                for mode in modes:
                    case = f"N={n} {mode}"
                    per: dict[str, list[dict[str, Any]]] = {}
                    for i in range(runs):
                        order = stacks if i % 2 == 0 else stacks[::-1]
                        for kind in order:
                            work = base / f"{kind}-{n}-{mode}-{i}"
                            stack = make_stack(kind, veth, work, files, root)
                            s = summarise(storm_once(veth, stack, files, n, mode))
                            per.setdefault(stack.name, []).append(s)
                            report(case, stack.name, i, runs, s)
                    for name, results in per.items():
                        rows += rows_for(case, name, results)
    finally:
        veth.delete()
    return add_ratios(rows, PEER)


def report(case: str, name: str, i: int, runs: int, s: dict[str, Any]) -> None:
    steps = " ".join(f"{k} {v[0] * 1000:.0f}/{v[1] * 1000:.0f}" for k, v in s["steps"].items())
    print(
        f"storm {case} run {i + 1}/{runs} {name}: all ready {s['last_ready_s']:.1f} s, "
        f"errors {s['errors']} {s['errors_by_step'] or ''}, server CPU "
        f"{s['server_cpu_s']:.1f} s, peak RSS {s['server_peak_rss_mb']:.0f} MB, PSS "
        f"{s['server_peak_pss_mb']:.0f} MB, client CPU "
        f"{s['client_cpu_s']:.1f} s, retries {s['dhcp_retries']}+{s['tftp_retries']}, "
        f"UDP drops {s['udp_drops']}, load {os.getloadavg()[0]:.1f}\n  p50/p99 ms: {steps}",
        file=sys.stderr,
        flush=True,
    )
    for message, count in s["error_messages"]:
        print(f"  {count} × {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="", help="machines per storm, comma-separated (100,500,1000)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--modes", default="burst,waves")
    ap.add_argument("--stacks", default=",".join(ALL_STACKS),
                    help="sqlite, etcd, static, static-assets (pxeserver with "
                         "server.static_assets)")  # fmt: skip
    args = ap.parse_args(argv)
    sizes = tuple(int(x) for x in args.n.split(",")) if args.n else None
    rows = run(args.runs, args.quick, sizes=sizes, modes=tuple(args.modes.split(",")),
               stacks=tuple(args.stacks.split(",")))  # fmt: skip
    print(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    time.tzset()
    sys.exit(main())
