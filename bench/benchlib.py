"""The benchmarks' one library: result rows, statistics, results files, server processes,
process-tree meters and network namespaces. Every module of ``bench/`` imports it through
the package (``from bench import benchlib`` or ``from bench.benchlib import …``): run the
benchmarks as ``python -m bench.NAME`` from the checkout, or all of them with ``bench/run``.

A result row (every benchmark module's ``run(runs, quick)`` returns a list of these)::

    {"benchmark": "storm", "case": "N=1000 burst", "server": "pxeserver (sqlite)",
     "metric": "time to all ready", "unit": "s", "median": 41.2, "min": 39.0, "max": 44.1,
     "runs": 3, "errors": 0, "ratio": 0.93, "ratio_to": "static stack",
     "higher_is_better": False}

``ratio`` is this row's median over the ``ratio_to`` server's median for the same
benchmark, case and metric, or over a goal's number (None for the peer itself).
``higher_is_better`` has no default: throughput and latency point opposite ways, and a
guessed direction mislabels the plot silently, so every row says which way it points.

Servers started here run in a process group of their own but in the benchmark's session
(with autogroup scheduling a server in a session of its own gets a share of a busy machine
unrelated to its speed) and are stopped by PID.

CPU and memory are read from ``/proc`` for a server's whole process tree (the process and
everything it started, found through ``/proc/PID/task/*/children``), sampled while the
benchmark runs: CPU seconds are user + system time, own and of waited-for children; RSS is
the sum of the tree's resident sets (shared pages count once per process, as ``ps`` shows
them). A child that starts and exits between two samples is not seen (tftpd-hpa's
per-transfer processes are not waited for, so their time reaches nobody): where that
matters the caller samples often and says so.

Free ports, "is it listening" and waiting come from ``tests/support/net.py``, which the
test suite runs on every CI run; the benchmarks are its second user, not a second copy.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Shared with the tests (re-exported: ``benchlib.free_port`` and so on).
from tests.support.net import free_port as free_port
from tests.support.net import port_open as port_open
from tests.support.net import wait_for as wait_for

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CACHE = REPO / "bench" / ".cache"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"

Row = dict[str, Any]


# -- result rows --------------------------------------------------------------------------------


def row(
    benchmark: str,
    case: str,
    server: str,
    metric: str,
    unit: str,
    samples: Sequence[float],
    *,
    higher_is_better: bool,
    errors: int = 0,
) -> Row:
    """One result row: median, min and max of ``samples`` (one per run); NaN for none."""
    values = [float(v) for v in samples] or [math.nan]
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
    if base > 0 and not math.isnan(ours["median"]):
        ours["ratio"] = ours["median"] / base
        ours["ratio_to"] = label


def add_ratios(rows: list[Row], peer: str) -> list[Row]:
    """:func:`set_ratio` of every row against ``peer``'s row of the same benchmark, case
    and metric."""
    peers = {(r["benchmark"], r["case"], r["metric"]): r for r in rows if r["server"] == peer}
    for r in rows:
        p = peers.get((r["benchmark"], r["case"], r["metric"]))
        if r["server"] != peer and p is not None:
            set_ratio(r, p)
    return rows


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank. NaN for no values: nothing measured
    is not a latency of 0 (a row shows it as "–", and a ratio to it is not taken)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def machine() -> dict[str, Any]:
    """The machine a result was measured on, and how busy it was."""
    model = ""
    mem = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
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


# -- results files ------------------------------------------------------------------------------


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
    if math.isnan(x):
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
        f"{name}: {info['when']}, {info['cpus']} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in info['loadavg'])} at the end\n\n"
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


# -- server processes ---------------------------------------------------------------------------


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
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``process_group=0``), then KILL."""
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


def start_etcd(workdir: Path) -> tuple[Process, str]:
    """A single-member etcd on free loopback ports with its data in ``workdir``."""
    if not os.access(ETCD, os.X_OK):
        raise RuntimeError("etcd is not installed: apt-get install etcd-server")
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    peer_url = f"http://127.0.0.1:{peer}"
    proc = Process(
        "etcd",
        [ETCD, "--name", "bench", "--data-dir", str(workdir / "etcd-data"),
         "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
         "--initial-cluster", f"bench={peer_url}", "--initial-cluster-state", "new",
         "--enable-v2"],
        workdir,
    )  # fmt: skip
    proc.start(lambda: _etcd_healthy(url))
    return proc, url


def _etcd_healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
            return b'"true"' in resp.read()
    except OSError:
        return False


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
    real footprint. ``memory=False`` reads CPU only (cheap enough to sample every 10 ms).
    """

    roots: Sequence[int]
    interval: float = 0.05
    memory: bool = True
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
                if self.memory:
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


# TCP congestion control on the namespaces' routes: cubic, Debian's default. This host's
# default is bbr, whose pacing fell to 2 kB/s on one veth connection under load (a 24 MiB
# initrd never finished in one storm); a namespace may not change the sysctl here.
CUBIC = ("congctl", "cubic")


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
            for ns, dev, src in ((self.server_ns, self.server_dev, self.SERVER_IP),
                                 (self.client_ns, self.client_dev, self.CLIENT_IP)):  # fmt: skip
                ip("-n", ns, "route", "replace", "192.0.2.0/24", "dev", dev, "proto", "kernel",
                   "scope", "link", "src", src, *CUBIC)  # fmt: skip
        except BaseException:
            self.delete()
            raise

    def add_machines(self, n: int) -> list[str]:
        """``n`` addresses on the machines' side (see the class), in machine order."""
        ips = [machine_ip(i) for i in range(n)]
        batch = "".join(f"addr add {a}/32 dev {self.client_dev}\n" for a in ips)
        subprocess.run(["ip", "-n", self.client_ns, "-batch", "-"], input=batch, text=True,
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        ip("-n", self.server_ns, "route", "replace", "198.18.0.0/15", "via", self.CLIENT_IP,
           *CUBIC)  # fmt: skip
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
