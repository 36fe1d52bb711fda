"""TFTP throughput: pxeserver against tftpd-hpa, side by side in one run, on the same root.

    .venv/bin/python bench/tftp_vs_tftpd_hpa.py            # 5 runs each, 50 MB, blksize 1468
    .venv/bin/python bench/tftp_vs_tftpd_hpa.py --runs 9 --out bench/results

Scenarios: one client fetching the file, and 32 clients fetching it at once (curl
``tftp://`` with ``--tftp-blksize``, lockstep as curl has no windowsize). Each run starts
both servers on free loopback ports, runs the scenario against each in alternating order,
and stops them by PID. Reported per server and scenario: MB/s (total bytes / wall time)
as median, min and max over the runs, and the server's CPU seconds per MB (user + system
of the server and its children, from /proc). The ratio is pxeserver's median / tftpd-hpa's.

pxeserver runs as ``pxeserver serve --no-dhcp`` exactly as a user starts it. tftpd-hpa is
Debian's ``in.tftpd --listen --secure --foreground`` (it forks one process per transfer).
Results go to ``bench/results/tftp-<time>.json`` and ``.md``. Importable: :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TFTPD = shutil.which("in.tftpd") or "/usr/sbin/in.tftpd"
CURL = shutil.which("curl") or "/usr/bin/curl"
MB = 1_000_000


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_by_pid(root: int) -> dict[int, float]:
    """CPU seconds (user + system, own and waited-for children) of ``root`` and descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    todo = [root]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        found[p] = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
        todo += [int(c) for c in children]
    return found


class CpuMeter:
    """CPU used by a server and every process it starts while measuring, sampled every 10 ms.

    tftpd-hpa forks a child per transfer and does not wait for it (its CPU never reaches
    the parent's cutime), so children are sampled while they live; the last sample of a
    child that exits between samples is at most 10 ms old.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = _cpu_by_pid(pid)
        self.last: dict[int, float] = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.last.update(_cpu_by_pid(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.last.update(_cpu_by_pid(self.pid))
        return sum(v - self.base.get(p, 0.0) for p, v in self.last.items())


class Server:
    name = ""

    def __init__(self, root: Path, workdir: Path) -> None:
        self.root = root
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - the child keeps it
        # A process group of its own (stopped as one by PID), but the benchmark's session:
        # with the kernel's autogroup scheduling every session is one CPU-share group, so
        # a server in a session of its own would get a share of a busy machine that has
        # nothing to do with how fast it is. Both servers and the clients share one here.
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, process_group=0,
            cwd=self.workdir,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.workdir}/{self.name}.log")
            if fetch(self.port, "probe", 512).ok:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not answer on port {self.port}")

    def cpu_meter(self) -> CpuMeter:
        assert self.proc is not None
        return CpuMeter(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


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
                "--http-port", str(free_port(socket.SOCK_STREAM)), "--workers", "1"]  # fmt: skip


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
    cpu = meter.stop()
    got = [int(o or 0) for o in outs]
    bad = sum(1 for g, p in zip(got, procs) if g != size or p.returncode != 0)
    total_mb = sum(got) / MB
    return {"mb_s": total_mb / wall, "wall_s": wall, "cpu_s_per_mb": cpu / max(total_mb, 1e-9),
            "errors": bad}  # fmt: skip


@dataclass
class Config:
    size: int = 50 * MB
    blksize: int = 1468
    runs: int = 5
    clients: tuple[int, ...] = (1, 32)
    out: Path | None = REPO / "bench" / "results"
    results: dict[str, Any] = field(default_factory=dict)


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [s["mb_s"] for s in samples]
    cpus = [s["cpu_s_per_mb"] for s in samples]
    return {
        "mb_s_median": statistics.median(rates),
        "mb_s_min": min(rates),
        "mb_s_max": max(rates),
        "cpu_s_per_mb_median": statistics.median(cpus),
        "errors": sum(s["errors"] for s in samples),
        "runs": len(samples),
    }


def run(cfg: Config) -> dict[str, Any]:
    """Run every scenario ``cfg.runs`` times against both servers; return the summary."""
    with tempfile.TemporaryDirectory(prefix="pxeserver-bench-tftp-") as tmp:
        base = Path(tmp)
        root = base / "root"
        root.mkdir()
        (root / "big.bin").write_bytes(os.urandom(cfg.size))
        (root / "probe").write_bytes(b"x")
        servers: list[Server] = []
        for cls in (Pxeserver, TftpdHpa):
            work = base / cls.name
            work.mkdir()
            servers.append(cls(root, work))
        samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
        try:
            for s in servers:
                s.start()
                # Warm up: files into each server's memory, transfer processes started.
                scenario(s, "big.bin", cfg.size, 4, cfg.blksize)
            for i in range(cfg.runs):
                order = servers if i % 2 == 0 else servers[::-1]
                for clients in cfg.clients:
                    for s in order:
                        r = scenario(s, "big.bin", cfg.size, clients, cfg.blksize)
                        samples.setdefault((s.name, clients), []).append(r)
                        print(f"run {i + 1}/{cfg.runs} {s.name:10} {clients:3} clients: "
                              f"{r['mb_s']:7.1f} MB/s, {r['cpu_s_per_mb'] * 1000:.2f} ms CPU/MB"
                              f"{'  ERRORS ' + str(r['errors']) if r['errors'] else ''}",
                              file=sys.stderr, flush=True)  # fmt: skip
        finally:
            for s in servers:
                s.stop()
    result: dict[str, Any] = {
        "size_bytes": cfg.size, "blksize": cfg.blksize, "runs": cfg.runs,
        "machine": machine(), "scenarios": {},
    }  # fmt: skip
    for clients in cfg.clients:
        ours = summarise(samples[("pxeserver", clients)])
        peer = summarise(samples[("tftpd-hpa", clients)])
        result["scenarios"][str(clients)] = {
            "pxeserver": ours,
            "tftpd-hpa": peer,
            "ratio": ours["mb_s_median"] / peer["mb_s_median"],
        }
    return result


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "python": sys.version.split()[0],
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"TFTP, {result['size_bytes'] / MB:.0f} MB file, blksize {result['blksize']}, curl "
        f"clients, {result['runs']} runs, loopback ({result['machine']['cpus']} CPUs, load "
        f"{result['machine']['loadavg_at_end'][0]:.2f} at the end, {result['machine']['when']})",
        "",
        "| clients | server | MB/s median | min | max | CPU ms/MB | errors | ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for clients, sc in result["scenarios"].items():
        for name in ("pxeserver", "tftpd-hpa"):
            s = sc[name]
            ratio = f"{sc['ratio']:.2f}×" if name == "pxeserver" else ""
            lines.append(
                f"| {clients} | {name} | {s['mb_s_median']:.1f} | {s['mb_s_min']:.1f} | "
                f"{s['mb_s_max']:.1f} | {s['cpu_s_per_mb_median'] * 1000:.2f} | {s['errors']} | "
                f"{ratio} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--blksize", type=int, default=1468)
    ap.add_argument("--clients", default="1,32", help="comma-separated client counts")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args(argv)
    cfg = Config(size=args.size_mb * MB, blksize=args.blksize, runs=args.runs,
                 clients=tuple(int(c) for c in args.clients.split(",")), out=args.out)  # fmt: skip
    result = run(cfg)
    text = markdown(result)
    print(text)
    if cfg.out is not None:
        cfg.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (cfg.out / f"tftp-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
        (cfg.out / f"tftp-{stamp}.md").write_text(text)
        print(f"written: {cfg.out}/tftp-{stamp}.json and .md", file=sys.stderr)
    errors = sum(
        s[n]["errors"] for s in result["scenarios"].values() for n in ("pxeserver", "tftpd-hpa")
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
