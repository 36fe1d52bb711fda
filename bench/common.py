"""What the benchmarks share: the result row, statistics, process-tree meters, namespaces.

A result row (every benchmark module's ``run(runs, quick)`` returns a list of these)::

    {"benchmark": "storm", "case": "N=1000 burst", "server": "pxeserver (sqlite)",
     "metric": "time to all ready", "unit": "s", "median": 41.2, "min": 39.0, "max": 44.1,
     "runs": 3, "errors": 0, "ratio": 0.93, "ratio_to": "static stack",
     "higher_is_better": False}

``ratio`` is this row's median over the ``ratio_to`` server's median for the same
benchmark, case and metric (None for the peer itself). Modules need not import this one:
the schema is the contract.

CPU and memory are read from ``/proc`` for a server's whole process tree (the process and
everything it started, found through ``/proc/PID/task/*/children``), sampled while the
benchmark runs: CPU seconds are user + system time, own and of waited-for children; RSS is
the sum of the tree's resident sets (shared pages count once per process, as ``ps`` shows
them). A child that starts and exits between two samples is not seen (tftpd-hpa's
per-transfer processes are not waited for, so their time reaches nobody): where that
matters the caller says so.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
ROW_KEYS = ("benchmark", "case", "server", "metric", "unit", "median", "min", "max", "runs",
            "errors", "ratio", "ratio_to", "higher_is_better")  # fmt: skip


def row(
    benchmark: str,
    case: str,
    server: str,
    metric: str,
    unit: str,
    samples: Sequence[float],
    *,
    errors: int = 0,
    higher_is_better: bool = False,
) -> dict[str, Any]:
    """One result row from the samples of several runs (median, min, max)."""
    values = [float(v) for v in samples] or [float("nan")]
    return {
        "benchmark": benchmark,
        "case": case,
        "server": server,
        "metric": metric,
        "unit": unit,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(samples),
        "errors": errors,
        "ratio": None,
        "ratio_to": None,
        "higher_is_better": higher_is_better,
    }


def add_ratios(rows: list[dict[str, Any]], peer: str) -> list[dict[str, Any]]:
    """Fill ``ratio``/``ratio_to`` of every row against ``peer``'s row of the same metric."""
    peers = {(r["benchmark"], r["case"], r["metric"]): r for r in rows if r["server"] == peer}
    for r in rows:
        p = peers.get((r["benchmark"], r["case"], r["metric"]))
        if r["server"] == peer or p is None or not p["median"]:
            continue
        r["ratio"] = r["median"] / p["median"]
        r["ratio_to"] = peer
    return rows


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def machine() -> dict[str, Any]:
    """The machine a result was measured on, and how busy it was."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_mb": mem,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "loadavg": list(os.getloadavg()),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- process trees ------------------------------------------------------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            kids = []
            for task in os.listdir(f"/proc/{pid}/task"):
                kids += Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        found.append(pid)
        todo += [int(k) for k in kids]
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system time of ``pid`` and its waited-for children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(x) for x in fields[11:15]) / TICK  # utime stime cutime cstime


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def process_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [c.decode(errors="replace") for c in cmd if c]
    return " ".join(words)[:160] if words else "?"


def smaps_rollup(pid: int) -> dict[str, int]:
    """Rss, Pss, Private_* and Shared_* of ``pid`` in bytes (``/proc/PID/smaps_rollup``)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


@dataclass
class TreeMeter:
    """CPU seconds and peak RSS of some process trees while a benchmark runs.

    Every ``interval`` seconds it walks each root's tree: the last CPU reading of every
    PID seen is kept (so processes that exit still count with what they had used at the
    last sample), and the tree's summed RSS and PSS are compared with the peaks so far.
    RSS counts a page shared by N processes N times (forked children such as tftpd-hpa's
    share nearly everything); PSS counts 1/N of it in each, so its sum is the tree's
    real footprint.
    """

    roots: Sequence[int]
    interval: float = 0.05
    base: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    peak_rss: int = 0
    peak_pss: int = 0
    samples: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._loop, name="tree-meter", daemon=True)
        self._thread.start()

    def _sample(self, first: bool = False) -> None:
        rss = pss = 0
        for root in self.roots:
            for pid in tree(root):
                cpu = cpu_seconds(pid)
                if cpu is None:
                    continue
                if first:
                    self.base[pid] = cpu
                self.last[pid] = cpu
                rss += rss_bytes(pid)
                pss += smaps_rollup(pid).get("Pss", 0)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> tuple[float, int]:
        """(CPU seconds used since the start, peak RSS in bytes)."""
        self._stop.set()
        self._thread.join()
        self._sample()
        cpu = sum(v - self.base.get(p, 0.0) for p, v in self.last.items())
        return cpu, self.peak_rss


# -- network namespaces -------------------------------------------------------------------------


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def machine_ip(index: int) -> str:
    """Simulated machine ``index``'s address: 198.18.0.1, …, 198.18.0.250, 198.18.1.1, …"""
    return f"198.18.{index // 250}.{index % 250 + 1}"


class Veth:
    """Two network namespaces joined by a veth pair: the server's and the machines'.

    The server side is 192.0.2.1/24, the machines' side 192.0.2.2/24 (RFC 5737 test
    addresses, reachable only inside these namespaces). Names carry a random suffix;
    :meth:`delete` removes both namespaces (and with them the veth pair).

    :meth:`add_machines` gives the machines' side one address per simulated machine, from
    198.18.0.0/15 (RFC 2544: set aside for benchmarks), routed from the server through
    192.0.2.2 as if behind a router: real machines have addresses of their own (pxeserver
    limits TFTP per address), and a routed range needs one neighbour entry on the server
    side instead of a thousand (the host's table holds 1,024).
    """

    SERVER_IP = "192.0.2.1"
    CLIENT_IP = "192.0.2.2"
    MACHINES_GW = "198.19.255.254"

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise PermissionError("the boot storm needs root: it creates network namespaces")
        if not shutil.which("ip"):
            raise FileNotFoundError("the boot storm needs iproute2's `ip` command")
        tag = secrets.token_hex(3)
        self.server_ns, self.client_ns = f"pxbs-{tag}", f"pxbc-{tag}"
        self.server_dev, self.client_dev = f"pxbs{tag}", f"pxbc{tag}"
        try:
            ip("netns", "add", self.server_ns)
            ip("netns", "add", self.client_ns)
            ip("link", "add", self.server_dev, "type", "veth", "peer", "name", self.client_dev)
            ip("link", "set", self.server_dev, "netns", self.server_ns)
            ip("link", "set", self.client_dev, "netns", self.client_ns)
            ip("-n", self.server_ns, "addr", "add", f"{self.SERVER_IP}/24", "dev", self.server_dev)
            ip("-n", self.client_ns, "addr", "add", f"{self.CLIENT_IP}/24", "dev", self.client_dev)
            for ns, dev in ((self.server_ns, self.server_dev), (self.client_ns, self.client_dev)):
                ip("-n", ns, "link", "set", dev, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    def add_machines(self, n: int) -> list[str]:
        """``n`` addresses on the machines' side (see the class), in machine order."""
        ips = [machine_ip(i) for i in range(n)]
        batch = "".join(f"addr add {a}/32 dev {self.client_dev}\n" for a in ips)
        subprocess.run(["ip", "-n", self.client_ns, "-batch", "-"], input=batch, text=True,
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        ip("-n", self.server_ns, "route", "replace", "198.18.0.0/15", "via", self.CLIENT_IP)
        # An address in the machines' range without its route, so that a ProxyDHCP that
        # picks its answers by subnet (dnsmasq) knows the range; the route stays the above.
        ip("-n", self.server_ns, "addr", "replace", f"{self.MACHINES_GW}/15", "dev",
           self.server_dev, "noprefixroute")  # fmt: skip
        return ips

    def exec_server(self, cmd: Iterable[str]) -> list[str]:
        return ["ip", "netns", "exec", self.server_ns, *cmd]

    def exec_client(self, cmd: Iterable[str]) -> list[str]:
        return ["ip", "netns", "exec", self.client_ns, *cmd]

    def delete(self) -> None:
        for ns in (self.server_ns, self.client_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``process_group=0``), then KILL."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
