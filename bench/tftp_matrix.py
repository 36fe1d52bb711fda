"""TFTP matrix: pxeserver against tftpd-hpa, dnsmasq and atftpd; blksize, windowsize, delay.

    .venv/bin/python -m bench.tftp_matrix               # 3 runs, 10 MB file
    .venv/bin/python -m bench.tftp_matrix --runs 1 --quick

Lockstep (RFC 1350 + blksize): 1 client and 32 clients at once, blksize 512, 1432 and
8192, curl as the client (it has no windowsize), against ``pxeserver serve --no-dhcp``,
Debian's tftpd-hpa (``in.tftpd --listen``), dnsmasq's TFTP (``--port 0``: no DNS) and
atftpd 0.8. MB/s is all bytes over the wall time, and the server's CPU per MB is sampled
from /proc as in ``tftp_vs_tftpd_hpa.py`` (whose server classes and CPU meter are used
here); pxeserver's ratio is to tftpd-hpa in the same run.

Windowsize (RFC 7440): one atftp 0.8 client (``--option "windowsize 16"``) against the
servers that support it, pxeserver and atftpd, through ``udp_delay.py``, a relay of this
repo that adds 0.2 ms or 1 ms each way (``tc netem`` is not available here), and on plain
loopback. The ratio is each server's windowsize-16 throughput over its own lockstep
throughput (same client, same delay): the goal is ≥ 4× for pxeserver at 1 ms.

Everything runs in a network namespace of its own (``unshare --net``, loopback only):
dnsmasq's TFTP always listens on port 69, which no other process may hold there, and no
other user of the machine can meet these servers. atftpd is not installed (Debian's
atftpd and tftpd-hpa conflict): ``apt-get download atftpd`` + ``dpkg -x`` into
``bench/.cache/atftpd`` (git-ignored), done here on first use.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import benchlib
from bench import tftp_vs_tftpd_hpa as base
from bench.udp_delay import DelayRelay

NAME = "tftp-matrix"
MB = 1_000_000
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
ATFTP = shutil.which("atftp") or "/usr/bin/atftp"
ATFTPD_DIR = benchlib.CACHE / "atftpd"
ATFTPD = ATFTPD_DIR / "usr" / "sbin" / "atftpd"
BLKSIZES = (512, 1432, 8192)
CLIENTS = (1, 32)
DELAYS_MS = (0.0, 0.2, 1.0)
WINDOW = 16
WINDOW_GOAL = 4.0


class Dnsmasq(base.Server):
    name = "dnsmasq"

    def __init__(self, root: Path, workdir: Path) -> None:
        super().__init__(root, workdir)
        self.port = 69  # dnsmasq's TFTP has no port option

    def command(self) -> list[str]:
        return [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--enable-tftp",
            f"--tftp-root={self.root}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--tftp-max=100",
            "--quiet-tftp",
            "--pid-file=",
            "--user=root",
            "--log-facility=-",
        ]


class Atftpd(base.Server):
    name = "atftpd"

    def command(self) -> list[str]:
        return [
            str(ATFTPD),
            "--daemon",
            "--no-fork",
            "--port",
            str(self.port),
            "--bind-address",
            "127.0.0.1",
            "--maxthread",
            "100",
            "--user",
            "root.root",
            "--logfile",
            str(self.workdir / "atftpd-own.log"),
            str(self.root),
        ]


def ensure_atftpd() -> None:
    """atftpd unpacked (not installed) into bench/.cache, so that tftpd-hpa stays."""
    if ATFTPD.exists():
        return
    ATFTPD_DIR.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # apt's download user writes here
        subprocess.run(["apt-get", "download", "atftpd"], cwd=tmp, check=True, capture_output=True)
        deb = glob.glob(f"{tmp}/atftpd_*.deb")[0]
        subprocess.run(["dpkg", "-x", deb, str(ATFTPD_DIR)], check=True)


def atftp_fetch(
    port: int, name: str, size: int, blksize: int, window: int | None, scratch: Path
) -> tuple[float, bool]:
    """One atftp download; (MB/s, complete)."""
    out = scratch / f"got-{port}-{window}"
    cmd = [ATFTP, "--get", "-r", name, "-l", str(out), "--option", f"blksize {blksize}"]
    if window:
        cmd += ["--option", f"windowsize {window}"]
    t0 = time.monotonic()
    proc = subprocess.run(
        [*cmd, "127.0.0.1", str(port)], capture_output=True, timeout=300, check=False
    )
    wall = time.monotonic() - t0
    got = out.stat().st_size if out.exists() else 0
    out.unlink(missing_ok=True)
    return got / MB / wall, proc.returncode == 0 and got == size


def lockstep(servers: list[base.Server], runs: int, size: int) -> list[benchlib.Row]:
    samples: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for i in range(runs):
        for clients in CLIENTS:
            for blksize in BLKSIZES:
                order = servers if i % 2 == 0 else servers[::-1]
                for s in order:
                    r = base.scenario(s, "big.bin", size, clients, blksize)
                    samples.setdefault((s.name, clients, blksize), []).append(r)
                    benchlib.log(
                        f"tftp run {i + 1} {s.name:10} {clients:2} clients blksize "
                        f"{blksize:5}: {r['mb_s']:7.1f} MB/s "
                        f"{r['cpu_s_per_mb'] * 1000:5.2f} ms CPU/MB"
                        f"{' ERRORS ' + str(r['errors']) if r['errors'] else ''}"
                    )
    rows = []
    for clients in CLIENTS:
        for blksize in BLKSIZES:
            case = f"{clients} client{'s' if clients > 1 else ''} at once, blksize {blksize}"
            made = {}
            for s in servers:
                ss = samples[(s.name, clients, blksize)]
                errors = sum(x["errors"] for x in ss)
                made[s.name] = benchlib.row(
                    "TFTP lockstep (curl)",
                    case,
                    s.name,
                    "throughput",
                    "MB/s",
                    [x["mb_s"] for x in ss],
                    errors=errors,
                    higher_is_better=True,
                )
                rows.append(made[s.name])
                rows.append(
                    benchlib.row(
                        "TFTP lockstep (curl)",
                        case,
                        s.name,
                        "server CPU",
                        "ms/MB",
                        [x["cpu_s_per_mb"] * 1000 for x in ss],
                        errors=errors,
                        higher_is_better=False,
                    )
                )
            if "tftpd-hpa" in made:
                for name, r in made.items():
                    if name != "tftpd-hpa":
                        benchlib.set_ratio(r, made["tftpd-hpa"])
    return rows


def windowed(servers: list[base.Server], runs: int, size: int, scratch: Path) -> list[benchlib.Row]:
    rows = []
    for delay in DELAYS_MS:
        case = (
            f"1 client, blksize 1432, {delay:g} ms added each way"
            if delay
            else ("1 client, blksize 1432, plain loopback")
        )
        for s in servers:
            rates: dict[int, list[float]] = {1: [], WINDOW: []}
            errors = 0
            for i in range(runs):
                for window in (1, WINDOW) if i % 2 == 0 else (WINDOW, 1):
                    relay = (
                        DelayRelay(("127.0.0.1", s.port), delay / 1000).start() if delay else None
                    )
                    try:
                        port = relay.port if relay else s.port
                        mb_s, ok = atftp_fetch(
                            port, "mid.bin", size, 1432, window if window > 1 else None, scratch
                        )
                    finally:
                        if relay:
                            relay.stop()
                    errors += 0 if ok else 1
                    rates[window].append(mb_s)
                    benchlib.log(
                        f"tftp window {s.name:10} {delay:4} ms windowsize {window:2}: "
                        f"{mb_s:7.2f} MB/s{'' if ok else ' INCOMPLETE'}"
                    )
            lock = benchlib.row(
                "TFTP windowsize (atftp client)",
                case,
                s.name,
                "throughput, lockstep",
                "MB/s",
                rates[1],
                errors=errors,
                higher_is_better=True,
            )
            win = benchlib.row(
                "TFTP windowsize (atftp client)",
                case,
                s.name,
                f"throughput, windowsize {WINDOW}",
                "MB/s",
                rates[WINDOW],
                errors=errors,
                higher_is_better=True,
            )
            benchlib.set_ratio(win, lock, f"{s.name} lockstep")
            rows += [lock, win]
    return rows


def run_here(runs: int, quick: bool) -> list[benchlib.Row]:
    size = (1 if quick else 10) * MB
    mid = (1 if quick else 2) * MB
    with tempfile.TemporaryDirectory(prefix="pxeserver-bench-tftp-matrix-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # dnsmasq and atftpd read the root as another user by default
        root = work / "root"
        root.mkdir()
        (root / "big.bin").write_bytes(os.urandom(size))
        (root / "mid.bin").write_bytes(os.urandom(mid))
        (root / "probe").write_bytes(b"x")
        for f in root.iterdir():
            f.chmod(0o644)
        root.chmod(0o755)
        classes: list[type[base.Server]] = [base.Pxeserver, base.TftpdHpa, Dnsmasq]
        if ATFTPD.exists():
            classes.append(Atftpd)
        servers = []
        for cls in classes:
            (work / cls.name).mkdir()
            servers.append(cls(root, work / cls.name))
        try:
            for s in servers:
                s.start()
                base.scenario(s, "big.bin", size, 4, 1432)  # warm up
            rows = lockstep(servers, runs, size)
            windowing = [s for s in servers if s.name in ("pxeserver", "atftpd")]
            rows += windowed(windowing, runs, mid, work)
        finally:
            for s in servers:
                s.stop()
    return rows


def run(runs: int = 3, quick: bool = False) -> list[benchlib.Row]:
    """The matrix, in a network namespace of its own (a child process under unshare).

    The namespace's loopback also gets 192.0.2.1: with only loopback addresses glibc's
    ``getaddrinfo(AI_ADDRCONFIG)`` finds no IPv4 configured and tftpd-hpa exits (66).
    """
    try:
        ensure_atftpd()
    except (subprocess.CalledProcessError, IndexError, OSError) as exc:
        benchlib.log(f"tftp: atftpd could not be unpacked ({exc}); measuring without it")
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [
            "unshare",
            "--net",
            "--",
            "sh",
            "-c",
            'ip link set lo up && ip addr add 192.0.2.1/32 dev lo && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "bench.tftp_matrix",
            "--inside",
            "--runs",
            str(runs),
            "--json",
            out.name,
        ] + (["--quick"] if quick else [])
        subprocess.run(cmd, check=True, timeout=3600, cwd=benchlib.REPO)
        rows: list[benchlib.Row] = json.loads(Path(out.name).read_text())
    return rows


NOTES = (
    "Lockstep: curl clients. Windowsize: one atftp 0.8 client, through bench/udp_delay.py "
    "(a Python relay adding the delay each way; no tc netem here) where a delay is named; "
    "its ratio is windowsize 16 over the same server's lockstep. All inside a network "
    "namespace of the benchmark's own (unshare --net)."
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 MB files, seconds")
    ap.add_argument("--out", type=Path, default=benchlib.RESULTS)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inside:
        rows = run_here(args.runs, args.quick)
        if args.json:
            args.json.write_text(json.dumps(rows))
        return 0
    rows = run(args.runs, args.quick)
    benchlib.write(NAME, rows, NOTES, args.out)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
