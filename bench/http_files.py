"""HTTP: a big boot asset (kernel, initrd) to concurrent clients, against nginx; and whether
the dynamic answers wait while big downloads run.

    .venv/bin/python -m bench.http_files                # 3 runs, 64 MiB file, wrk 10 s
    .venv/bin/python -m bench.http_files --runs 1 --quick

A file of random bytes (64 MiB; 16 MiB with ``--quick``) is written into the temporary
folder (never into the checkout) and served by both servers from that one path:
``pxeserver serve --no-dhcp --no-tftp`` (SQLite, 2 HTTP workers, the default) answers
``/assets/big.img`` from its ``assets_dir`` through granian's file response
(``pxeserver/web/entrance.py``), nginx (2 workers, ``sendfile on`` as in Debian's default
configuration, access log off) from an ``alias`` of the same folder. Per run, alternating
which server goes first:

- throughput: ``wrk -t2 -c8 -d10s`` on the file's URL, 8 connections each downloading it
  again and again; MB/s is wrk's "Transfer/sec" (every byte read, including the downloads
  the end of the run cuts short), in 10^6 bytes/s; the ratio is pxeserver's over nginx's;
- dynamic answers beside downloads, pxeserver only: ``/ipxe?mac=…`` of 1,000 registered
  nodes rotating at a fixed 500 requests/s for 10 s (``bench/rate_load.py``, open loop,
  latency from the time each request was due), once alone and once while the same 8
  downloads run; the ratio is the p99 with downloads over the p99 alone (goal: about 1,
  "never delaying the dynamic answers").

Everything is on loopback, so a download is as fast as the two servers and wrk can move
bytes on the shared cores, not limited by a network: the worst case for the dynamic
answers. Range and conditional requests are the tests' (tests/web/test_files.py), not timed here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import benchlib, rate_load
from bench.http_load import NGINX, WRK, Pxeserver, mac_of, register, write_config

NAME = "http_files"
ASSET = "big.img"
THREADS, CONNECTIONS = 2, 8  # wrk -t2 -c8: 8 downloads at once
RATE = 500.0  # /ipxe requests/s beside the downloads: a rate the server keeps up with alone
UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}  # wrk's are binary

NGINX_CONF = """
worker_processes 2;
daemon off;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    default_type application/octet-stream;
    client_body_temp_path {base}/nginx-tmp;
    proxy_temp_path {base}/nginx-tmp;
    fastcgi_temp_path {base}/nginx-tmp;
    uwsgi_temp_path {base}/nginx-tmp;
    scgi_temp_path {base}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        location /assets/ {{ alias {assets}/; }}
    }}
}}
"""


class Nginx(benchlib.Process):
    def __init__(self, base: Path, port: int, assets: Path) -> None:
        (base / "nginx-tmp").mkdir(exist_ok=True)
        conf = base / "nginx.conf"
        conf.write_text(NGINX_CONF.format(base=base, port=port, assets=assets))
        super().__init__("nginx", [NGINX, "-c", str(conf), "-p", str(base)], base)
        self.port = port

    def up(self) -> None:
        self.start(lambda: benchlib.port_open(self.port))


def wrk_command(port: int, seconds: float) -> list[str]:
    return [WRK, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:.0f}s", "--timeout", "30s",
            f"http://127.0.0.1:{port}/assets/{ASSET}"]  # fmt: skip


def parse_wrk(out: str) -> dict[str, float]:
    """MB/s (10^6 bytes, every byte read), whole downloads/s and errors from wrk's report."""
    moved = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)", out)
    done = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if moved is None or done is None:
        raise RuntimeError(f"wrk's report not understood:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    if sock:
        errors += sum(int(x) for x in sock.groups())
    mb_s = float(moved.group(1)) * UNITS[moved.group(2)] / 1e6
    return {"mb_s": mb_s, "downloads_s": float(done.group(1)), "errors": errors}


def download(port: int, seconds: float, pid: int) -> dict[str, float]:
    """wrk on the big file; the server's CPU seconds (process tree ``pid``) and wrk's."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    meter = benchlib.TreeMeter([pid], interval=0.1, memory=False)
    done = subprocess.run(wrk_command(port, seconds), capture_output=True, text=True,
                          timeout=seconds + 90, check=False)  # fmt: skip
    cpu, _ = meter.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stdout}{done.stderr}")
    got = parse_wrk(done.stdout)
    gb = got["mb_s"] * seconds / 1000
    got["server_cpu_per_gb"] = cpu / gb if gb > 0 else math.nan
    got["wrk_cpu"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return got


def ipxe_p99(port: int, macs: list[str], seconds: float, source: int | None) -> dict[str, float]:
    """/ipxe at RATE for ``seconds``, alone or while wrk downloads the big file from the
    server on port ``source``."""
    paths = [f"/ipxe?mac={m}" for m in macs]
    loader, out = None, ""
    if source is not None:  # the downloads start first and last past the end of the run
        loader = subprocess.Popen(wrk_command(source, seconds + 3), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)  # fmt: skip
        time.sleep(1.0)
    try:
        res = rate_load.run_at_rate(port, paths, RATE, seconds)
    finally:
        if loader is not None:
            out, _ = loader.communicate(timeout=seconds + 90)
    got = {
        "p99_ms": benchlib.percentile(res.latencies_s, 99) * 1000,
        "p50_ms": benchlib.percentile(res.latencies_s, 50) * 1000,
        "errors": float(res.errors),
        "mb_s": parse_wrk(out)["mb_s"] if loader is not None else math.nan,
    }
    benchlib.log(
        f"http_files /ipxe at {RATE:.0f}/s, downloads from port {source}: "
        f"p50 {got['p50_ms']:.1f} ms p99 {got['p99_ms']:.1f} ms unanswered {res.errors}, "
        f"generator lag {res.lag_ms:.1f} ms; downloads meanwhile {got['mb_s']:.0f} MB/s"
    )
    return got


def run(runs: int = 3, quick: bool = False) -> list[benchlib.Row]:
    size = (16 if quick else 64) * 1024 * 1024
    seconds = 3 if quick else 10
    nodes = 200 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="pxeserver-bench-files-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # nginx's workers run as nobody
        pxe_port = benchlib.free_port()
        config = write_config(base, pxe_port)
        assets = base / "assets"
        with open(assets / ASSET, "wb") as f:
            for _ in range(size // (1 << 20)):
                f.write(os.urandom(1 << 20))
        (assets / ASSET).chmod(0o644)
        benchlib.log(f"http_files: {size >> 20} MiB file; registering {nodes} nodes")
        register(config, None, nodes)
        macs = [mac_of(i) for i in range(nodes)]
        server = Pxeserver(base, config, pxe_port, None)
        nginx = Nginx(base, benchlib.free_port(), assets)
        try:
            server.up()
            nginx.up()
            return measure(server, nginx, size, macs, runs, seconds)
        finally:
            server.stop()
            nginx.stop()


def measure(pxe: Pxeserver, nginx: Nginx, size: int, macs: list[str], runs: int,
            seconds: int) -> list[benchlib.Row]:  # fmt: skip
    name = "pxeserver (sqlite)"
    samples: dict[str, list[dict[str, float]]] = {name: [], "nginx": []}
    for i in range(runs):
        order = [(name, pxe.pid, pxe.port), ("nginx", nginx.pid, nginx.port)]
        for server, pid, port in order if i % 2 == 0 else order[::-1]:
            r = download(port, seconds, pid)
            samples[server].append(r)
            benchlib.log(
                f"http_files {server:18} {r['mb_s']:8.0f} MB/s "
                f"{r['downloads_s']:6.1f} downloads/s errors {r['errors']:.0f}; server CPU "
                f"{r['server_cpu_per_gb']:.2f} s/GB, wrk CPU {r['wrk_cpu']:.1f} s"
            )
    bench = f"HTTP big file (wrk -t{THREADS} -c{CONNECTIONS})"
    case = f"{size >> 20} MiB, {CONNECTIONS} downloads at once"
    rows = []
    metrics = (("MB/s", "MB/s", "mb_s", True),
               ("server CPU per GB", "s", "server_cpu_per_gb", False))  # fmt: skip
    for metric, unit, key, higher in metrics:
        made = {
            server: benchlib.row(bench, case, server, metric, unit, [s[key] for s in ss],
                                 errors=int(sum(s["errors"] for s in ss)),
                                 higher_is_better=higher)
            for server, ss in samples.items()
        }  # fmt: skip
        benchlib.set_ratio(made[name], made["nginx"], "nginx")
        rows += made.values()
    return rows + beside_downloads(name, pxe.port, nginx.port, macs, runs, seconds)


def beside_downloads(name: str, pxe_port: int, nginx_port: int, macs: list[str], runs: int,
                     seconds: int) -> list[benchlib.Row]:  # fmt: skip
    """pxeserver's /ipxe latency alone, while 8 downloads run from it, and (the control:
    the same load on the machine, not on pxeserver) while they run from nginx."""
    conditions = {"alone": None, f"{CONNECTIONS} downloads from pxeserver": pxe_port,
                  f"{CONNECTIONS} downloads from nginx": nginx_port}  # fmt: skip
    got: dict[str, list[dict[str, float]]] = {c: [] for c in conditions}
    for i in range(runs):  # rotating which goes first
        labels = list(conditions)
        for label in labels[i % 3 :] + labels[: i % 3]:
            got[label].append(ipxe_p99(pxe_port, macs, seconds, conditions[label]))
    bench = f"HTTP /ipxe at {RATE:,.0f} req/s beside big downloads (rate_load.py)"
    rows, alone = [], None
    for label, ss in got.items():
        case = f"{len(macs)} MACs rotating, {label}"
        errors = int(sum(s["errors"] for s in ss))
        p99 = benchlib.row(bench, case, name, "p99 latency", "ms", [s["p99_ms"] for s in ss],
                           errors=errors, higher_is_better=False)  # fmt: skip
        if alone is None:
            alone = p99
        else:
            benchlib.set_ratio(p99, alone, "alone")
        rows.append(p99)
        rows.append(benchlib.row(bench, case, name, "p50 latency", "ms",
                                 [s["p50_ms"] for s in ss], errors=errors,
                                 higher_is_better=False))  # fmt: skip
        if conditions[label] is not None:
            rows.append(benchlib.row(bench, case, name, "downloads meanwhile", "MB/s",
                                     [s["mb_s"] for s in ss], higher_is_better=True))  # fmt: skip
    return rows


NOTES = (
    "Both servers send the same file (random bytes in the temporary folder) over loopback; "
    "MB/s is wrk's Transfer/sec in 10^6 bytes/s. The /ipxe latency is pxeserver's alone "
    "and beside 8 unthrottled downloads from it: its ratio is p99 with over p99 without."
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="16 MiB file, 3 s per measurement")
    ap.add_argument("--out", type=Path, default=benchlib.RESULTS)
    args = ap.parse_args(argv)
    rows = run(args.runs, args.quick)
    benchlib.write(NAME, rows, NOTES, args.out)
    print(json.dumps({"rows": len(rows)}), file=sys.stderr)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
