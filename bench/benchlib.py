"""What the micro-benchmarks share: result rows, their JSON/Markdown, peers started by PID.

Every benchmark module (``tftp_matrix``, ``http``, ``registry``) exposes
``run(runs, quick) -> list[dict]`` returning rows of one schema (:func:`row`), so that
``bench/run`` can put them in one table. A row is one figure: the median of ``runs``
measurements with their min and max, the errors seen, and where a peer was measured in
the same run, the ratio of pxeserver's median to the peer's (``ratio_to`` names it).

Servers started here run in a process group of their own but in the benchmark's session
(see ``tftp_vs_tftpd_hpa.py``: with autogroup scheduling a server in a session of its own
gets a share of a busy machine unrelated to its speed) and are stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# bench/'s modules import their neighbours by bare name.
_BENCH = os.path.dirname(os.path.abspath(__file__))
if _BENCH not in sys.path:
    sys.path.append(_BENCH)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CACHE = REPO / "bench" / ".cache"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"

Row = dict[str, Any]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def row(
    benchmark: str,
    case: str,
    server: str,
    metric: str,
    unit: str,
    samples: list[float],
    *,
    errors: int = 0,
    higher_is_better: bool = True,
) -> Row:
    """One result row: median, min and max of ``samples`` (one per run)."""
    return {
        "benchmark": benchmark,
        "case": case,
        "server": server,
        "metric": metric,
        "unit": unit,
        "median": float(statistics.median(samples)) if samples else float("nan"),
        "min": float(min(samples)) if samples else float("nan"),
        "max": float(max(samples)) if samples else float("nan"),
        "runs": len(samples),
        "errors": int(errors),
        "ratio": None,
        "ratio_to": None,
        "higher_is_better": higher_is_better,
    }


def set_ratio(ours: Row, theirs: Row | float, label: str | None = None) -> None:
    """``ours``'s median over ``theirs``'s (a row of the same run, or a goal's number)."""
    if isinstance(theirs, dict):
        base = float(theirs["median"])
        label = label or str(theirs["server"])
    else:
        base = float(theirs)
    if base > 0 and ours["median"] == ours["median"]:
        ours["ratio"] = ours["median"] / base
        ours["ratio_to"] = label


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": sys.version.split()[0],
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "shared": "shared development machine: other people's builds and tests ran meanwhile",
    }


def markdown(rows: Iterable[Row]) -> str:
    lines = [
        "| benchmark | case | server | metric | median | min | max | unit | runs | errors "
        "| ratio |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for r in rows:
        ratio = f"**{r['ratio']:.2f}×** {r['ratio_to']}" if r["ratio"] is not None else ""
        lines.append(
            f"| {r['benchmark']} | {r['case']} | {r['server']} | {r['metric']} | "
            f"{_num(r['median'])} | {_num(r['min'])} | {_num(r['max'])} | {r['unit']} | "
            f"{r['runs']} | {r['errors']} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    if x != x:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def write(name: str, rows: list[Row], notes: str = "", out: Path | None = RESULTS) -> str:
    """Print the Markdown table and write ``<out>/<name>-<time>.json`` and ``.md``."""
    info = machine()
    text = (
        f"{name}: {info['when']}, {info['cpus']} CPUs, load "
        f"{' '.join(f'{x:.2f}' for x in info['loadavg'])} at the end ({info['shared']})\n\n"
        + markdown(rows)
        + (f"\n{notes}\n" if notes else "")
    )
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (out / f"{name}-{stamp}.json").write_text(
            json.dumps({"machine": info, "rows": rows}, indent=2) + "\n"
        )
        (out / f"{name}-{stamp}.md").write_text(text)
        print(f"written: {out}/{name}-{stamp}.json and .md", file=sys.stderr)
    return text


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Process:
    """A server process in its own process group (this session), stopped by PID."""

    def __init__(self, name: str, command: list[str], workdir: Path, **popen: Any) -> None:
        self.name = name
        self.command = command
        self.workdir = workdir
        self.popen = popen
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, ready: Callable[[], bool], timeout: float = 60) -> None:
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            self.command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            process_group=0,
            cwd=self.workdir,
            **self.popen,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            if ready():
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} did not become ready in {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.proc = None


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_etcd(workdir: Path) -> tuple[Process, str]:
    """A single-member etcd on free loopback ports with its data in ``workdir``."""
    if not os.access(ETCD, os.X_OK):
        raise RuntimeError("etcd is not installed: apt-get install etcd-server")
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    data = workdir / "etcd-data"
    proc = Process(
        "etcd",
        [
            ETCD,
            "--name",
            "bench",
            "--data-dir",
            str(data),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"bench=http://127.0.0.1:{peer}",
            "--initial-cluster-state",
            "new",
            "--enable-v2",
        ],
        workdir,
    )
    proc.start(lambda: _etcd_healthy(url))
    return proc, url


def _etcd_healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
            return b'"true"' in resp.read()
    except OSError:
        return False
