"""HTTP: ``/ipxe`` and whole boots (script, then config) of registered nodes, against nginx.

    .venv/bin/python -m bench.http_load                 # 3 runs, 10,000 nodes, wrk 10 s
    .venv/bin/python -m bench.http_load --runs 1 --quick

For each store (SQLite, then etcd) the benchmark registers 10,000 nodes, starts ``pxeserver
serve --no-dhcp --no-tftp`` (2 HTTP workers, the default) on a free loopback port, fetches
``/ipxe?mac=…`` of 1,000 of those nodes once from it, then the config URL each script
names (``/cloud-config?mac=…&secret=…``: a config is served once per secret, and not at
all without one), and puts exactly those bytes in an nginx root as static files (nginx
maps ``/ipxe?mac=X`` to the file ``ipxe/X`` and ``/cloud-config?mac=X&…`` to
``cloud-config/X``), so both servers answer the same URLs with the same bytes. Three cases:

- ``/ipxe``: the script of a MAC, rotating over the 1,000;
- ``/ipxe, one MAC``: the script of ONE of them, asked again and again (a machine in a
  retry loop); nginx serves that one file. Its row ``one MAC / rotating`` is pxeserver's
  requests/s over its own for the rotation, run by run (goal: 1.0, no worse);
- ``boot``: what a machine asks over HTTP besides its kernel and initrd: ``/ipxe?mac=…``,
  then the config URL that answer names (a fresh secret each time). Each wrk thread boots
  its own share of the MACs, so that no machine boots twice at once (a machine's older
  config URL is refused once a newer one was used). Its requests/s count both requests;
  boots/s are half of it.

Then, per run and case, alternating which server goes first:

- throughput: ``wrk -t2 -c32`` for 10 s with a Lua script, against pxeserver and against
  nginx; the ratio is pxeserver's requests/s over nginx's in the same run;
- latency at a fixed rate: 2,000 and 500 requests/s for 10 s from ``rate_load.py`` (an
  open-loop generator of this repo, since wrk2 is not in Debian), p50 and p99 from the
  time each request was due; for ``boot``, 1,000 and 250 boots/s (the same requests/s),
  each boot's latency from its due time to the end of its config.

Every request that pxeserver answers for a known node also records a boot step (the
script makes the node ``booting``, the config ``configured``), written behind the answer
(docs/RELIABILITY.md, "Known machines from memory"). Requests that are not 2xx, socket
errors and timeouts are errors. The 10,000 nodes never phone home, so the server's bound
on such records (``limits.never_booted``) is raised for the benchmark: at the default,
10,000, registering them would make it forget the oldest.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any

from bench import benchlib, rate_load

NAME = "http"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ONE_MAC = "/ipxe, one MAC"
CASES = ("/ipxe", ONE_MAC, "boot")
ONE_MAC_GOAL = 1.0  # one MAC asking again and again: no slower than the rotation
THREADS, CONNECTIONS = 2, 32  # wrk -t2 -c32
RATE = 2000.0  # requests/s (the goal's); a boot is two requests
RATES = (RATE / 4, RATE)
P99_GOAL_MS = 20.0
NGINX_RATIO_GOAL = 0.25
NEVER_BOOTED = 100_000  # limits.never_booted here: ten times the nodes registered
# The config URL in an iPXE script's kernel line, as a path (the server is the one asked).
CONFIG_PATH = re.compile(rb"cloud-config-url=https?://[^/\s]+(/\S+)")

LUA_IPXE = """
local macs = {@MACS@}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/ipxe?mac=" .. macs[(i % #macs) + 1])
end
"""

# A boot per MAC: its script, then the config URL the script names. wrk calls response()
# for an answer and request() when that connection may send again, but other connections'
# answers can come in between, so the config paths wait in a queue: any connection may
# fetch any of them (all come from 127.0.0.1), each exactly once. Thread k of n boots the
# MACs k, k + n, k + 2n, ...: two threads never boot the same machine at once.
LUA_BOOT = """
local macs = {@MACS@}
local stride = @THREADS@
local threads = {}
local pending = {}
local i = nil
scripts, configs, missing = 0, 0, 0

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

request = function()
  if #pending > 0 then
    configs = configs + 1
    return wrk.format("GET", table.remove(pending, 1))
  end
  if i == nil then i = id end
  local mac = macs[(i % #macs) + 1]
  i = i + stride
  return wrk.format("GET", "/ipxe?mac=" .. mac)
end

response = function(status, headers, body)
  if status == 200 and body:sub(1, 6) == "#!ipxe" then
    scripts = scripts + 1
    local path = body:match("cloud%-config%-url=https?://[^/%s]+(/%S+)")
    if path then table.insert(pending, path) else missing = missing + 1 end
  end
end

function done(summary, latency, requests)
  local s, c, m = 0, 0, 0
  for _, thread in ipairs(threads) do
    s = s + thread:get("scripts")
    c = c + thread:get("configs")
    m = m + thread:get("missing")
  end
  io.write(string.format("boot: %d scripts, %d configs asked, %d without a config URL\\n",
                         s, c, m))
end
"""

NGINX_CONF = """
worker_processes 2;
daemon off;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {base}/nginx-tmp;
    proxy_temp_path {base}/nginx-tmp;
    fastcgi_temp_path {base}/nginx-tmp;
    uwsgi_temp_path {base}/nginx-tmp;
    scgi_temp_path {base}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        root {base}/www;
        location = /ipxe {{ try_files /ipxe/$arg_mac =404; }}
        location = /cloud-config {{ try_files /cloud-config/$arg_mac =404; }}
    }}
}}
"""


def mac_of(i: int) -> str:
    return "02:01:" + ":".join(f"{(i >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


def write_config(base: Path, port: int) -> Path:
    import yaml

    raw = yaml.safe_load((benchlib.REPO / "pxeserver.example.yaml").read_text())
    raw["paths"] = {
        "data_dir": str(base / "data"),
        "assets_dir": str(base / "assets"),
        "tftp_root": str(base / "tftproot"),
        "templates_dir": str(benchlib.REPO / "cloud-configs"),
    }
    raw["server"]["base_url"] = f"http://127.0.0.1:{port}"
    raw["server"]["log_level"] = "WARNING"  # a log line per request would be the benchmark
    raw.setdefault("limits", {})["never_booted"] = NEVER_BOOTED
    for sub in ("data", "assets", "tftproot"):
        (base / sub).mkdir(exist_ok=True)
    path = base / "pxeserver.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def register(config: Path, etcd: str | None, count: int) -> None:
    """``count`` nodes in the store the server will use, as its first sightings make them."""
    from pxeserver.config import load
    from pxeserver.daemon import make_registry, make_store
    from pxeserver.model import MAC, EventKind
    from pxeserver.nodes.registry import Change

    overrides: dict[str, Any] = {}
    if etcd:
        overrides = {"store.backend": "etcd", "store.etcd_endpoints": [etcd]}
    settings, _ = load(config, overrides)
    store = make_store(settings)
    registry = make_registry(settings, store, local=False)

    def part(k: int) -> None:
        for i in range(k, count, 8):
            registry.apply(MAC.parse(mac_of(i)), Change(EventKind.DHCP, "bench"))

    threads = [threading.Thread(target=part, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()


class Pxeserver(benchlib.Process):
    def __init__(self, base: Path, config: Path, port: int, etcd: str | None) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pxeserver",
            "serve",
            "--config",
            str(config),
            "--listen",
            "127.0.0.1",
            "--no-dhcp",
            "--no-tftp",
            "--http-port",
            str(port),
        ]
        if etcd:
            cmd += ["--etcd", etcd]
        super().__init__("pxeserver", cmd, base)
        self.port = port

    def up(self) -> None:
        self.start(lambda: _get(self.port, "/healthz") is not None)


class Nginx(benchlib.Process):
    def __init__(self, base: Path, port: int) -> None:
        (base / "nginx-tmp").mkdir(exist_ok=True)
        conf = base / "nginx.conf"
        conf.write_text(NGINX_CONF.format(base=base, port=port))
        super().__init__("nginx", [NGINX, "-c", str(conf), "-p", str(base)], base)
        self.port = port

    def up(self) -> None:
        self.start(lambda: benchlib.port_open(self.port))


def report_server_errors(server: benchlib.Process) -> None:
    """The server's own account of failed requests (its log goes with the temporary folder)."""
    try:
        lines = server.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return
    bad = [line for line in lines if " ERROR " in line or "Traceback" in line]
    if bad:
        benchlib.log(f"pxeserver logged {len(bad)} errors; the last ones:")
        for line in bad[-5:]:
            benchlib.log("  " + line[:300])


def _get(port: int, path: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return bytes(resp.read())
    except OSError:
        return None


def mirror(pxe_port: int, www: Path, macs: list[str]) -> None:
    """What pxeserver answers for each MAC, as static files for nginx: its script, and the
    config the script's URL gives (as a machine asks for it, once)."""
    for folder in ("ipxe", "cloud-config"):
        (www / folder).mkdir(parents=True, exist_ok=True)
    for mac in macs:
        script = _get(pxe_port, f"/ipxe?mac={mac}")
        if script is None:
            raise RuntimeError(f"pxeserver did not answer /ipxe?mac={mac}")
        (www / "ipxe" / mac).write_bytes(script)
        path = CONFIG_PATH.search(script)
        if path is None:
            raise RuntimeError(f"no cloud-config-url= in the script of {mac}: {script[:300]!r}")
        config = _get(pxe_port, path.group(1).decode())
        if config is None:
            raise RuntimeError(f"pxeserver did not answer {path.group(1).decode()}")
        (www / "cloud-config" / mac).write_bytes(config)


def wrk(port: int, lua: Path, seconds: int) -> dict[str, float]:
    done = subprocess.run(
        [
            WRK,
            f"-t{THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(lua),
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if done.returncode != 0:  # a Lua error is on wrk's output, not in its exit status
        raise RuntimeError(f"wrk -s {lua} exited {done.returncode}: {done.stdout}{done.stderr}")
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    if sock:
        errors += sum(int(x) for x in sock.groups())
    boot = re.search(r"boot: (\d+) scripts, (\d+) configs asked, (\d+) without", out)
    if boot:  # a script that names no config URL is an error (the boot cannot go on)
        errors += int(boot.group(3))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    p99_ms = 0.0
    if p99:
        p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    configs = float(boot.group(2)) if boot else math.nan
    return {"rps": rps, "errors": errors, "p99_ms": p99_ms, "configs": configs}


def run(
    runs: int = 3, quick: bool = False, stores: tuple[str, ...] = ("sqlite", "etcd")
) -> list[benchlib.Row]:
    nodes = 1000 if quick else 10_000
    rotation = 200 if quick else 1000
    seconds = 2 if quick else 10
    rate_seconds = 2.0 if quick else 10.0
    macs = [mac_of(i * nodes // rotation) for i in range(rotation)]
    rows: list[benchlib.Row] = []
    with tempfile.TemporaryDirectory(prefix="pxeserver-bench-http-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # nginx's workers run as nobody
        nginx = Nginx(base, benchlib.free_port())
        etcd_proc = None
        try:
            nginx.up()
            for kind in stores:
                work = base / kind
                work.mkdir()
                etcd = None
                if kind == "etcd":
                    etcd_proc, etcd = benchlib.start_etcd(work)
                port = benchlib.free_port()
                config = write_config(work, port)
                benchlib.log(f"http: {kind}: registering {nodes} nodes")
                register(config, etcd, nodes)
                server = Pxeserver(work, config, port, etcd)
                server.up()
                try:
                    mirror(port, base / "www", macs)  # also the warm-up
                    rows += measure(
                        kind, server.port, nginx.port, base, macs, runs, seconds, rate_seconds
                    )
                finally:
                    server.stop()
                    report_server_errors(server)
                    if etcd_proc is not None:
                        etcd_proc.stop()
                        etcd_proc = None
        finally:
            nginx.stop()
            if etcd_proc is not None:
                etcd_proc.stop()
    return rows


def measure(
    kind: str,
    pxe_port: int,
    nginx_port: int,
    base: Path,
    macs: list[str],
    runs: int,
    seconds: int,
    rate_seconds: float,
) -> list[benchlib.Row]:
    rows: list[benchlib.Row] = []
    name = f"pxeserver ({kind})"
    # The rotation and one MAC asking again and again (a machine in a retry loop: the
    # first of the rotation, whose script nginx serves from the same file) take turns
    # within each run, so that their ratio compares figures seconds apart.
    for group in (("/ipxe", ONE_MAC), ("boot",)):
        luas = {}
        for what in group:
            lua = base / {"/ipxe": "ipxe.lua", ONE_MAC: "ipxe-one.lua", "boot": "boot.lua"}[what]
            script = LUA_BOOT if what == "boot" else LUA_IPXE
            quoted = ", ".join(f'"{m}"' for m in (macs[:1] if what == ONE_MAC else macs))
            lua.write_text(script.replace("@MACS@", quoted).replace("@THREADS@", str(THREADS)))
            luas[what] = lua
        samples = throughput(kind, name, pxe_port, nginx_port, luas, runs, seconds)
        for what in group:
            rows += case_rows(kind, what, name, samples, len(macs))
        for what in group:
            # Latency at fixed rates, pxeserver only (nginx's is far below a millisecond):
            # the goal's 2,000/s, and a quarter of it (a server not overloaded).
            one = what == ONE_MAC
            case = case_name(kind, what, len(macs))
            for rate in (RATE,) if one else RATES:
                rows += fixed_rate(kind, what, case, name, pxe_port, macs[:1] if one else macs,
                                   rate, runs, rate_seconds)  # fmt: skip
    return rows


# case -> server -> one wrk result per run
Samples = dict[str, dict[str, list[dict[str, float]]]]


def case_name(kind: str, what: str, rotating: int) -> str:
    if what == ONE_MAC:
        return f"{kind} store, one MAC again and again"
    return f"{kind} store, {rotating} MACs rotating"


def case_rows(kind: str, what: str, name: str, samples: Samples,
              rotating: int) -> list[benchlib.Row]:  # fmt: skip
    """The requests/s rows of ``what`` (pxeserver's with its ratio to nginx's), and for one
    MAC its ratio to the rotation."""
    label = "boot: /ipxe, then its config URL" if what == "boot" else "/ipxe"
    bench = f"HTTP {label} (wrk -t{THREADS} -c{CONNECTIONS})"
    case = case_name(kind, what, rotating)
    made = {}
    for server, ss in samples[what].items():
        made[server] = benchlib.row(bench, case, server, "requests/s", "1/s",
                                    [s["rps"] for s in ss],
                                    errors=int(sum(s["errors"] for s in ss)),
                                    higher_is_better=True)  # fmt: skip
    benchlib.set_ratio(made[name], made["nginx"], "nginx")
    rows = list(made.values())
    if what == ONE_MAC:  # the goal: no worse than any other known machine, run by run
        rows.append(one_mac_ratio(bench, case, name, samples[ONE_MAC][name],
                                  samples["/ipxe"][name]))  # fmt: skip
    return rows


def throughput(kind: str, name: str, pxe_port: int, nginx_port: int, luas: dict[str, Path],
               runs: int, seconds: int) -> Samples:  # fmt: skip
    """wrk with each of ``luas`` against pxeserver and nginx, ``runs`` times: in each run
    every case in turn, alternating which server goes first."""
    samples: Samples = {what: {name: [], "nginx": []} for what in luas}
    for i in range(runs):
        for what, lua in luas.items():
            order = [(name, pxe_port), ("nginx", nginx_port)]
            for server, port in order if i % 2 == 0 else order[::-1]:
                r = wrk(port, lua, seconds)
                samples[what][server].append(r)
                benchlib.log(
                    f"http {kind:6} {what:6} {server:18} {r['rps']:9.0f} req/s "
                    f"p99 {r['p99_ms']:6.1f} ms errors {r['errors']:.0f}"
                    + (f", {r['configs']:.0f} configs asked" if what == "boot" else "")
                )
    return samples


def one_mac_ratio(bench: str, case: str, name: str, one: list[dict[str, float]],
                  rotating: list[dict[str, float]]) -> benchlib.Row:  # fmt: skip
    """pxeserver's requests/s for one MAC over those for the rotation, per run; goal 1.0."""
    ratios = [a["rps"] / b["rps"] for a, b in zip(one, rotating) if b["rps"] > 0]
    r = benchlib.row(bench, case, name, "one MAC / rotating", "×", ratios,
                     errors=int(sum(a["errors"] for a in one)), higher_is_better=True)  # fmt: skip
    benchlib.set_ratio(r, ONE_MAC_GOAL, f"goal {ONE_MAC_GOAL:.1f}")
    return r


def fixed_rate(kind: str, what: str, case: str, name: str, port: int, macs: list[str],
               rate: float, runs: int, seconds: float) -> list[benchlib.Row]:  # fmt: skip
    """Latency at ``rate`` requests/s: of each script (``/ipxe``), or of each boot (its
    script and its config, at half the rate in boots/s)."""
    boot = what == "boot"
    paths = [f"/ipxe?mac={m}" for m in macs]
    per_s = rate / 2 if boot else rate
    p99s, p50s, errors, achieved = [], [], 0, []
    for _ in range(runs):
        res = rate_load.run_at_rate(port, paths, per_s, seconds,
                                    then=CONFIG_PATH if boot else None)  # fmt: skip
        p99s.append(benchlib.percentile(res.latencies_s, 99) * 1000)
        p50s.append(benchlib.percentile(res.latencies_s, 50) * 1000)
        errors += res.errors
        achieved.append(res.achieved_rate)
        benchlib.log(
            f"http {kind:6} {what:6} at {per_s:.0f}/s: {res.achieved_rate:.0f}/s "
            f"p50 {p50s[-1]:.1f} ms p99 {p99s[-1]:.1f} ms unanswered {res.errors} "
            f"generator lag {res.lag_ms:.1f} ms"
        )
    if boot:
        bench = f"HTTP boot at {per_s:,.0f} boots/s = {rate:,.0f} req/s (rate_load.py)"
    else:
        bench = f"HTTP /ipxe at {rate:,.0f} req/s (rate_load.py)"
    p99 = benchlib.row(bench, case, name, "p99 latency", "ms", p99s, errors=errors,
                       higher_is_better=False)  # fmt: skip
    if rate == RATE and not boot:  # the goal is per request; a boot's latency is two
        benchlib.set_ratio(p99, P99_GOAL_MS, f"goal {P99_GOAL_MS:.0f} ms")
    p50 = benchlib.row(bench, case, name, "p50 latency", "ms", p50s, errors=errors,
                       higher_is_better=False)  # fmt: skip
    got = benchlib.row(bench, case, name, "achieved rate", "1/s", achieved, errors=errors,
                       higher_is_better=True)  # fmt: skip
    return [p99, p50, got]


NOTES = (
    "nginx serves the bytes pxeserver answered for the same URLs, as static files. A boot "
    "is /ipxe, then the config URL (one-time secret) its answer names: requests/s count "
    "both. Every pxeserver answer for a known node also records a boot step (booting / "
    "configured), written behind the answer. "
    "Fixed-rate figures come from bench/rate_load.py (open loop, latency from the time a "
    "request was due), not wrk2; their errors are requests not answered by the end of the "
    "run plus 10 s, or not 2xx: a server that cannot keep up with the rate shows them."
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1,000 nodes, 2 s per measurement")
    ap.add_argument("--stores", default="sqlite,etcd", help="comma-separated: sqlite, etcd")
    ap.add_argument("--out", type=Path, default=benchlib.RESULTS)
    args = ap.parse_args(argv)
    rows = run(args.runs, args.quick, tuple(args.stores.split(",")))
    benchlib.write(NAME, rows, NOTES, args.out)
    print(json.dumps({"rows": len(rows)}), file=sys.stderr)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
