"""The node page with a large registry: the API's answers, and the page in Chromium.

    .venv/bin/python bench/page.py                       # 10,000 nodes, both stores, 3 runs
    .venv/bin/python bench/page.py --stores sqlite --runs 5
    .venv/bin/python bench/page.py --quick               # 1,000 nodes, 1 run
    .venv/bin/python bench/page.py --source /tmp/before  # the server of another checkout

For each store, a fleet of N nodes (tests/support/fleet.py: mostly ready, some booting,
configured, lost or new, with boot timelines) is written straight into the store, then a
real ``pxeserver serve`` (HTTP only) answers:

- ``GET /api/v1/nodes``, the whole list, and ``?sort=last_seen&order=desc&limit=100``,
  one page of the table: bytes and seconds (urllib, one request after the other);
- the page in Debian's headless Chromium (tests/support/browser.py), a fresh browser per
  run: *first paint* (the browser's first-contentful-paint: the header and the banner)
  and *first rows* (the first frame after the first table row is in the document,
  recorded by a script the browser runs before the page's own);
- in the same browser, what a page that kept the whole list would pay at each refresh:
  ``fetch("/api/v1/nodes")`` and its JSON parse, timed in the page;
- then 20 s with the page open: how often it refreshed, the main thread's long tasks
  (over 50 ms: the page does not respond meanwhile), and the server's CPU seconds per
  second (its whole process tree, from /proc).

``--source DIR`` runs the server (and so the page it serves) from another checkout, e.g.
``git worktree add /tmp/before <commit>``, to measure a page before a change with the
same fleet and the same browser; the fleet is written by this checkout's code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python bench/page.py): the checkout holds the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib
from bench.benchlib import TreeMeter

NAME = "page"
OPEN_SECONDS = 20
PAGE_QUERY = "?sort=last_seen&order=desc&limit=100"
# Runs in the page before its own script: the time of the first frame after a table row
# appears (a requestAnimationFrame callback runs before that frame's paint, a task queued
# from it after the paint), and the main thread's long tasks.
PROBE = """
window.__rowsAt = null; window.__long = [];
new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); })
  .observe({ type: "longtask", buffered: true });
new MutationObserver((_, obs) => {
  if (document.querySelector("#node-table tbody tr")) {
    obs.disconnect();
    requestAnimationFrame(() => setTimeout(() => { window.__rowsAt = performance.now(); }, 0));
  }
}).observe(document, { childList: true, subtree: true });
"""
SETTINGS: dict[str, Any] = {
    "server": {"log_level": "WARNING"},
    "cluster": {"heartbeat_ttl": 86400, "boot_timeout": 86400},  # nothing turns lost
    "profiles": {
        "coreos": {"kernel": "coreos/vmlinuz", "initrd": ["coreos/initrd.cpio.gz"]},
        "flatcar": {"kernel": "flatcar/vmlinuz", "initrd": ["flatcar/initrd.cpio.gz"]},
    },
    "groups": [
        {"name": "x86-rack", "profile": "coreos", "selectors": {"arch": "x86_64"}},
        {"name": "arm-rack", "profile": "flatcar", "selectors": {"arch": "arm64"}},
    ],
}


def write_config(work: Path, etcd: str | None) -> Path:
    import yaml

    raw = json.loads(json.dumps(SETTINGS))
    raw["paths"] = {
        "data_dir": str(work / "data"),
        "templates_dir": str(benchlib.REPO / "cloud-configs"),
    }
    if etcd:
        raw["store"] = {"backend": "etcd", "etcd_endpoints": [etcd]}
    (work / "data").mkdir(parents=True, exist_ok=True)
    path = work / "pxeserver.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def register(config: Path, count: int) -> float:
    """The fleet written into the server's store; the seconds it took."""
    from pxeserver.config import load
    from pxeserver.daemon import make_store
    from tests.support import fleet

    settings, _ = load(config, {})
    store = make_store(settings)
    started = time.perf_counter()
    try:
        fleet.register(store, count)
    finally:
        store.close()
    return time.perf_counter() - started


def serve(work: Path, config: Path, source: Path | None) -> tuple[benchlib.Process, str]:
    port = benchlib.free_port()
    cmd = [sys.executable, "-m", "pxeserver", "serve", "--config", str(config)]
    cmd += ["--listen", "127.0.0.1", "--http-port", str(port), "--no-dhcp", "--no-tftp"]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    proc = benchlib.Process("pxeserver", cmd, work, env=env)
    url = f"http://127.0.0.1:{port}"
    proc.start(lambda: get(url + "/healthz") is not None, timeout=120)
    return proc, url


def get(url: str) -> tuple[int, float] | None:
    """(bytes, seconds) of one GET, or None if nothing answered."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:
            size = len(resp.read())
    except OSError:
        return None
    return size, time.perf_counter() - started


def answers(url: str, runs: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for name, query in (("whole list", ""), ("a page of 100", PAGE_QUERY)):
        for _ in range(runs):
            answer = get(f"{url}/api/v1/nodes{query}")
            assert answer is not None, f"{url} did not answer"
            found.setdefault(f"{name}: bytes", []).append(answer[0])
            found.setdefault(f"{name}: seconds", []).append(answer[1])
    return found


def in_chromium(url: str, server_pid: int, work: Path, run: int) -> dict[str, float]:
    from tests.support import browser

    driver = browser.chromium(work / f"chromium-{run}", work / f"chromedriver-{run}.log")
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
        driver.set_page_load_timeout(300)
        driver.get(url + "/")
        deadline = time.monotonic() + 300
        while driver.execute_script("return window.__rowsAt") is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the page showed no rows in 300 s")
            time.sleep(0.05)
        figures = {
            "first paint": driver.execute_script(
                "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                "return p ? p.startTime : null"
            ),
            "first rows": driver.execute_script("return window.__rowsAt"),
            "whole list fetched and parsed in the page": driver.execute_async_script(
                "const done = arguments[arguments.length - 1]; const t = performance.now();"
                "fetch('/api/v1/nodes').then((r) => r.json())"
                ".then(() => done(performance.now() - t), () => done(null));"
            ),
        }
        driver.execute_script("window.__long = []; performance.clearResourceTimings()")
        meter = TreeMeter([server_pid])
        time.sleep(OPEN_SECONDS)
        cpu, _ = meter.stop()
        long_tasks = driver.execute_script("return window.__long")
        refreshes = driver.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter((e) => e.name.includes('/api/v1/nodes')).length"
        )
        figures.update({
            "refreshes per minute, page open": refreshes * 60 / OPEN_SECONDS,
            "long tasks per minute, page open": len(long_tasks) * 60 / OPEN_SECONDS,
            "longest task, page open": max(long_tasks, default=0.0),
            "server CPU, page open": cpu / OPEN_SECONDS,
        })  # fmt: skip
        return {k: float(v) for k, v in figures.items() if v is not None}
    finally:
        driver.quit()


UNITS = {
    "bytes": "bytes",
    "seconds": "s",
    "first paint": "ms",
    "first rows": "ms",
    "whole list fetched and parsed in the page": "ms",
    "refreshes per minute, page open": "1/min",
    "long tasks per minute, page open": "1/min",
    "longest task, page open": "ms",
    "server CPU, page open": "CPU s/s",
    "register the fleet": "s",
}


def unit_of(metric: str) -> str:
    return UNITS.get(metric) or UNITS[metric.rsplit(": ", 1)[-1]]


def one_store(
    kind: str, count: int, runs: int, base: Path, source: Path | None
) -> list[benchlib.Row]:
    work = base / kind
    work.mkdir()
    etcd_proc, etcd = benchlib.start_etcd(work) if kind == "etcd" else (None, None)
    server = None
    try:
        config = write_config(work, etcd)
        benchlib.log(f"page: {kind}: writing {count} nodes")
        samples: dict[str, list[float]] = {"register the fleet": [register(config, count)]}
        server, url = serve(work, config, source)
        get(f"{url}/api/v1/nodes")  # warm: imports, caches, the first scan
        for metric, values in answers(url, runs).items():
            samples.setdefault(metric, []).extend(values)
        for run in range(runs):
            benchlib.log(f"page: {kind}: Chromium, run {run + 1} of {runs}")
            for metric, value in in_chromium(url, server.pid, work, run).items():
                samples.setdefault(metric, []).append(value)
    finally:
        if server is not None:
            server.stop()
        if etcd_proc is not None:
            etcd_proc.stop()
    case = f"{count:,} nodes" + (f", server from {source}" if source else "")
    return [
        benchlib.row(NAME, case, f"pxeserver ({kind})", metric, unit_of(metric), values,
                     higher_is_better=False)
        for metric, values in samples.items()
    ]  # fmt: skip


def run(
    runs: int = 3,
    quick: bool = False,
    stores: tuple[str, ...] = ("sqlite", "etcd"),
    source: Path | None = None,
) -> list[benchlib.Row]:
    count = 1000 if quick else 10_000
    rows: list[benchlib.Row] = []
    with tempfile.TemporaryDirectory(prefix="pxeserver-bench-page-") as tmp:
        for kind in stores:
            rows += one_store(kind, count, 1 if quick else runs, Path(tmp), source)
    return rows


NOTES = (
    "first paint: the browser's first-contentful-paint (header, banner); first rows: the "
    "first frame after a table row exists. 'whole list fetched and parsed in the page' is "
    "what a page keeping all nodes would pay at each refresh, before drawing anything. "
    f"The page-open figures cover {OPEN_SECONDS} s with the page's own refresh."
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1,000 nodes, 1 run")
    ap.add_argument("--stores", default="sqlite,etcd", help="comma-separated: sqlite, etcd")
    ap.add_argument("--source", type=Path, help="run the server from this checkout")
    ap.add_argument("--out", type=Path, default=benchlib.RESULTS)
    args = ap.parse_args(argv)
    rows = run(args.runs, args.quick, tuple(args.stores.split(",")), args.source)
    benchlib.write(NAME, rows, NOTES, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
