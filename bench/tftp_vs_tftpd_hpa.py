"""TFTP throughput: pxeserver against tftpd-hpa, side by side in one run, on the same root.

    .venv/bin/python -m bench.tftp_vs_tftpd_hpa            # 5 runs each, 50 MB, blksize 1468
    .venv/bin/python -m bench.tftp_vs_tftpd_hpa --runs 9 --clients 1,8,32 --blksize 1432

Scenarios: one client fetching the file, and 32 clients fetching it at once (curl
``tftp://`` with ``--tftp-blksize``, lockstep as curl has no windowsize). Each run starts
both servers on free loopback ports, runs the scenario against each in alternating order,
and stops them by PID. Reported per server and scenario (result rows, ``bench/benchlib.py``):
MB/s (total bytes / wall time) as median, min and max over the runs, and the server's CPU
milliseconds per MB (user + system of the server and its children, from /proc). The ratio
is pxeserver's median / tftpd-hpa's.

pxeserver runs as ``pxeserver serve --no-dhcp`` exactly as a user starts it. tftpd-hpa is
Debian's ``in.tftpd --listen --secure --foreground`` (it forks one process per transfer).
Results go to ``bench/results/tftp-<time>.json`` and ``.md``. Importable: :func:`run`;
:class:`Server`, :func:`scenario` are also ``tftp_matrix.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import benchlib
from bench.benchlib import TreeMeter, free_port

NAME = "tftp"
TFTPD = shutil.which("in.tftpd") or "/usr/sbin/in.tftpd"
CURL = shutil.which("curl") or "/usr/bin/curl"
MB = 1_000_000


class Server:
    """A TFTP server on a free loopback port, in a process group of its own but the
    benchmark's session (``benchlib.Process``), ready once a real client fetches a file."""

    name = ""

    def __init__(self, root: Path, workdir: Path) -> None:
        self.root = root
        self.workdir = workdir
        self.port = free_port(socket.SOCK_DGRAM)
        self.process: benchlib.Process | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = benchlib.Process(self.name, self.command(), self.workdir)
        self.process.start(lambda: fetch(self.port, "probe", 512).ok)

    def cpu_meter(self) -> TreeMeter:
        """CPU only, every 10 ms: tftpd-hpa forks a child per transfer and never waits for
        it (its CPU never reaches the parent's), so children are read while they live; the
        last reading of one that exits between samples is at most 10 ms old."""
        assert self.process is not None
        return TreeMeter([self.process.pid], interval=0.01, memory=False)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.process = None


class TftpdHpa(Server):
    name = "tftpd-hpa"

    def command(self) -> list[str]:
        return [TFTPD, "--listen", "--foreground", "--secure",
                "--address", f"127.0.0.1:{self.port}", str(self.root)]  # fmt: skip


class Pxeserver(Server):
    name = "pxeserver"

    def command(self) -> list[str]:
        config = self.workdir / "pxeserver.yaml"
        # 32 clients share 127.0.0.1 here; on a boot network each machine has its own address
        shared = {"tftp_sessions_per_client": 1024, "tftp_requests_per_client": 100_000}
        config.write_text(json.dumps({
            "paths": {"tftp_root": str(self.root), "data_dir": str(self.workdir)},
            "limits": shared,
        }))  # fmt: skip
        return [sys.executable, "-m", "pxeserver", "serve", "--config", str(config),
                "--listen", "127.0.0.1", "--no-dhcp", "--tftp-port", str(self.port),
                "--http-port", str(free_port()), "--workers", "1"]  # fmt: skip


@dataclass
class Fetch:
    ok: bool
    size: int


def fetch(port: int, name: str, blksize: int) -> Fetch:
    out = subprocess.run(
        [CURL, "-s", "--max-time", "600", "--tftp-blksize", str(blksize), "-o", os.devnull,
         "-w", "%{size_download}", f"tftp://127.0.0.1:{port}/{name}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return Fetch(out.returncode == 0, int(out.stdout or 0))


def scenario(server: Server, name: str, size: int, clients: int, blksize: int) -> dict[str, Any]:
    """``clients`` curls at once; MB/s over the wall time, and the server's CPU per MB."""
    cmd = [CURL, "-s", "--max-time", "600", "--tftp-blksize", str(blksize), "-o", os.devnull,
           "-w", "%{size_download}", f"tftp://127.0.0.1:{server.port}/{name}"]  # fmt: skip
    meter = server.cpu_meter()
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    outs = [p.communicate()[0] for p in procs]
    wall = time.monotonic() - t0
    time.sleep(0.05)  # the last transfer's final ACK is handled after the client exits
    cpu, _ = meter.stop()
    got = [int(o or 0) for o in outs]
    bad = sum(1 for g, p in zip(got, procs) if g != size or p.returncode != 0)
    total_mb = sum(got) / MB
    return {"mb_s": total_mb / wall, "wall_s": wall, "cpu_s_per_mb": cpu / max(total_mb, 1e-9),
            "errors": bad}  # fmt: skip


def run(
    runs: int = 5,
    quick: bool = False,
    *,
    size: int = 50 * MB,
    blksize: int = 1468,
    clients: tuple[int, ...] = (1, 32),
) -> list[benchlib.Row]:
    """Every scenario ``runs`` times against both servers (``quick``: a 5 MB file)."""
    size = 5 * MB if quick else size
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="pxeserver-bench-tftp-") as tmp:
        base = Path(tmp)
        root = base / "root"
        root.mkdir()
        (root / "big.bin").write_bytes(os.urandom(size))
        (root / "probe").write_bytes(b"x")
        servers: list[Server] = []
        for cls in (Pxeserver, TftpdHpa):
            (base / cls.name).mkdir()
            servers.append(cls(root, base / cls.name))
        try:
            for s in servers:
                s.start()
                # Warm up: files into each server's memory, transfer processes started.
                scenario(s, "big.bin", size, 4, blksize)
            for i in range(runs):
                order = servers if i % 2 == 0 else servers[::-1]
                for n in clients:
                    for s in order:
                        r = scenario(s, "big.bin", size, n, blksize)
                        samples.setdefault((s.name, n), []).append(r)
                        benchlib.log(
                            f"run {i + 1}/{runs} {s.name:10} {n:3} clients: {r['mb_s']:7.1f} "
                            f"MB/s, {r['cpu_s_per_mb'] * 1000:.2f} ms CPU/MB"
                            f"{'  ERRORS ' + str(r['errors']) if r['errors'] else ''}"
                        )
        finally:
            for s in servers:
                s.stop()
    return rows(samples, size, blksize, clients)


def rows(samples: dict[tuple[str, int], list[dict[str, Any]]], size: int, blksize: int,
         clients: tuple[int, ...]) -> list[benchlib.Row]:  # fmt: skip
    out = []
    bench = f"TFTP lockstep (curl), {size / MB:g} MB, blksize {blksize}"
    for n in clients:
        case = f"{n} client{'s' if n > 1 else ''} at once"
        made = {}
        for name in ("pxeserver", "tftpd-hpa"):
            ss = samples[(name, n)]
            errors = sum(x["errors"] for x in ss)
            made[name] = benchlib.row(bench, case, name, "throughput", "MB/s",
                                      [x["mb_s"] for x in ss], errors=errors,
                                      higher_is_better=True)  # fmt: skip
            cpu = benchlib.row(bench, case, name, "server CPU", "ms/MB",
                               [x["cpu_s_per_mb"] * 1000 for x in ss], errors=errors,
                               higher_is_better=False)  # fmt: skip
            out += [made[name], cpu]
        benchlib.set_ratio(made["pxeserver"], made["tftpd-hpa"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a 5 MB file")
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--blksize", type=int, default=1468)
    ap.add_argument("--clients", default="1,32", help="comma-separated client counts")
    ap.add_argument("--out", type=Path, default=benchlib.RESULTS)
    args = ap.parse_args(argv)
    clients = tuple(int(c) for c in args.clients.split(","))
    result = run(args.runs, args.quick, size=args.size_mb * MB, blksize=args.blksize,
                 clients=clients)  # fmt: skip
    benchlib.write(NAME, result, out=args.out)
    return 1 if any(r["errors"] for r in result) else 0


if __name__ == "__main__":
    sys.exit(main())
