"""System calls per TFTP data block: pxeserver and tftpd-hpa, each under ``strace -f -c``.

    .venv/bin/python -m bench.tftp_syscalls                 # 10 MB to 1 curl, blksize 1432
    .venv/bin/python -m bench.tftp_syscalls --clients 32 --size-mb 2

Each server (the classes of ``tftp_vs_tftpd_hpa.py``) is started under ``strace -f -c``
twice: once it serves only the readiness probe, once also ``clients`` curls fetching the
file at once. The difference of the two counts, divided by the data blocks sent, is the
cost per block; what the server does to start and stop cancels out (a transfer process
started on demand does not: it shows as a few hundredths of ``openat``/``newfstatat``).
strace slows the servers down many times: this counts calls, it does not time them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import tftp_vs_tftpd_hpa as base

STRACE = shutil.which("strace") or "/usr/bin/strace"
# strace -c's table: % time, seconds, usecs/call, calls, [errors,] syscall
_ROW = re.compile(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$")


def counts(text: str) -> dict[str, int]:
    found = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m and m.group(2) != "total":
            found[m.group(2)] = int(m.group(1))
    return found


def traced(cls: type[base.Server], root: Path, work: Path, clients: int, size: int,
           blksize: int) -> dict[str, int]:  # fmt: skip
    """System calls of one life of the server; ``clients`` 0: only the readiness probe."""
    out = work / "strace.txt"

    class Traced(cls):  # type: ignore[valid-type,misc]
        def command(self) -> list[str]:
            return [STRACE, "-f", "-c", "-o", str(out), *super().command()]

    work.mkdir()
    server = Traced(root, work)
    server.start()
    try:
        if clients:
            r = base.scenario(server, "big.bin", size, clients, blksize)
            if r["errors"]:
                raise RuntimeError(f"{cls.name}: {r['errors']} transfers failed under strace")
        time.sleep(0.5)  # the last ACK
    finally:
        server.stop()
    return counts(out.read_text())


def per_block(clients: int, size: int, blksize: int) -> dict[str, dict[str, float]]:
    blocks = clients * (size // blksize + 1)
    result = {}
    with tempfile.TemporaryDirectory(prefix="pxeserver-bench-syscalls-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        (root / "big.bin").write_bytes(os.urandom(size))
        (root / "probe").write_bytes(b"x")
        for cls in (base.Pxeserver, base.TftpdHpa):
            idle = traced(cls, root, Path(tmp) / f"{cls.name}-idle", 0, size, blksize)
            busy = traced(cls, root, Path(tmp) / f"{cls.name}-busy", clients, size, blksize)
            calls = {k: (n - idle.get(k, 0)) / blocks for k, n in busy.items()}
            result[cls.name] = dict(sorted(calls.items(), key=lambda kv: -kv[1]))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--size-mb", type=int, default=10)
    ap.add_argument("--blksize", type=int, default=1432)
    args = ap.parse_args(argv)
    found = per_block(args.clients, args.size_mb * base.MB, args.blksize)
    for name, calls in found.items():
        shown = {k: v for k, v in calls.items() if v >= 0.005}
        print(f"{name:10} {args.clients:3} clients: {sum(shown.values()):.2f} system calls "
              f"per block: " + ", ".join(f"{k} {v:.2f}" for k, v in shown.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
