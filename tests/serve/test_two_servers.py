"""Two real ``pxeserver serve`` processes on one etcd, racing on the same machines.

500 machines; each asks both servers for its iPXE script at the same moment (1,000 first
sightings, the two servers racing to create the same record and to give out hostnames),
then fetches its cloud-config from one server and phones home to the other. Afterwards
the registry, read straight from etcd, must hold 500 records with 500 distinct
hostnames, and every request that was answered must be there as exactly one event.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pxeserver.model import MAC, State
from pxeserver.store.etcd import EtcdStore

from ..support.etcd import etcd_prefix
from ..support.net import wait_for
from ..support.server import ServerProcess
from ..support.web import config_path

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

MACHINES = 500
CLIENTS = 32
# The node's token as the shipped cloud-configs carry it (CoreOS and Flatcar templates).
JOURNAL_LINE = re.compile(r'^pxeserver_journal_entries_total\{outcome="(\w+)"\} ([0-9.e+]+)$')
TOKEN = re.compile(r"(?:Authorization: Bearer |PXESERVER_TOKEN=)([A-Za-z0-9_\-]+)")


def mac_of(i: int) -> str:
    return f"52:54:00:d2:{i // 256:02x}:{i % 256:02x}"


KEY = "two-servers-" + "k" * 32


def fetch(
    method: str, url: str, retried: Counter[tuple[str, str]], headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """One request as a booting machine makes it; a 503 is retried as iPXE and curl would,
    and counted: the attempt that got the 503 may have been recorded all the same."""
    mac = re.search(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", url)
    kind = url.rsplit("/", 1)[-1].split("?")[0]
    for _ in range(20):
        req = urllib.request.Request(url, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                return exc.code, exc.read().decode(errors="replace")
            retried[(mac.group(0) if mac else "", kind)] += 1
        time.sleep(0.5)
    return 503, "still unavailable after 20 tries"


def journal_counts(server: ServerProcess) -> dict[str, float]:
    """The server's ``pxeserver_journal_entries`` by outcome (absent: none yet)."""
    status, _, body = server.get("/metrics")
    assert status == 200, status
    counts: dict[str, float] = {}
    for line in body.decode().splitlines():
        found = JOURNAL_LINE.match(line)
        if found:
            counts[found.group(1)] = float(found.group(2))
    return counts


def settle_journal(server: ServerProcess) -> int:
    """Wait until the server has replayed (or dropped) whatever it journalled; how many."""
    last: dict[str, float] = {}

    def settled() -> bool:
        nonlocal last
        last = journal_counts(server)
        done = last.get("replayed", 0) + last.get("dropped", 0)
        return done >= last.get("journalled", 0)

    wait_for(settled, 120, f"{server.url} to replay its journal", interval=0.5)
    assert not last.get("dropped"), f"{server.url} dropped journalled writes: {last}"
    return int(last.get("journalled", 0))


def test_two_servers_race_on_500_machines(etcd: Any, tmp_path: Path) -> None:
    prefix = etcd_prefix()
    servers = [
        ServerProcess(
            tmp_path / name,
            # servers on one boot network share the key of the config URLs' secrets
            settings={"store": {"etcd_prefix": prefix}, "server": {"config_fetch_key": KEY}},
            args=["--no-dhcp", "--no-tftp", "--etcd", etcd.client_url],
            name=name,
        )
        for name in ("a", "b")
    ]
    retried: Counter[tuple[str, str]] = Counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as starting:
            list(starting.map(lambda s: s.start(timeout=90), servers))
        start = time.monotonic()
        # Both servers' first sightings of each machine, side by side in the queue, so
        # that the two requests for one MAC run at the same moment.
        sightings = [
            f"{servers[(i + k) % 2].url}/ipxe?mac={mac_of(i)}&arch=x86_64&platform=pcbios"
            for i in range(MACHINES)
            for k in (0, 1)
        ]
        with concurrent.futures.ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            first = list(pool.map(lambda url: fetch("GET", url, retried), sightings))
            sighted = time.monotonic() - start
            bad = [(url, r) for url, r in zip(sightings, first, strict=True) if r[0] != 200]
            assert not bad, bad[:3]

            def configure_and_report(i: int) -> tuple[int, int]:
                fetcher, reporter = servers[i % 2], servers[(i + 1) % 2]
                script = first[2 * i][1]  # the script the fetcher served (k = 0)
                url = fetcher.url + config_path(script)
                status, text = fetch("GET", url, retried)
                if status != 200:
                    return status, 0
                token = TOKEN.search(text)
                assert token, text[:500]
                ready, _ = fetch(
                    "POST",
                    f"{reporter.url}/api/v1/nodes/{mac_of(i)}/ready",
                    retried,
                    {"Authorization": f"Bearer {token.group(1)}"},
                )
                return status, ready

            later = list(pool.map(configure_and_report, range(MACHINES)))
        elapsed = time.monotonic() - start
        assert later == [(200, 200)] * MACHINES, Counter(later)
        # A write the store did not take in time went to the server's journal and is
        # replayed in the background: wait until every one is, before reading etcd.
        journalled = sum(settle_journal(s) for s in servers)
        listed = servers[1].json("/api/v1/nodes")
        assert listed["count"] == MACHINES
    finally:
        for s in servers:
            s.stop()

    store = EtcdStore((etcd.client_url,), prefix, timeout=10)
    try:
        nodes = {v.node.mac: v.node for v in store.scan()}
    finally:
        store.close()
    assert len(nodes) == MACHINES
    assert len({n.hostname for n in nodes.values()}) == MACHINES
    # Per machine: each answered request exactly once, in order; an attempt answered
    # with 503 (and retried) at most once more.
    problems = []
    for i in range(MACHINES):
        mac = mac_of(i)
        node = nodes[MAC.parse(mac)]
        kinds = [e.kind.value for e in node.events]
        for kind, answered, path in (
            ("ipxe", 2, "ipxe"),
            ("cloud-config", 1, "cloud-config"),
            ("ready", 1, "ready"),
        ):
            extra = retried[(mac, path)]
            if not answered <= kinds.count(kind) <= answered + extra:
                problems.append(f"{mac}: {kinds.count(kind)} {kind} events, {answered} answered")
        if kinds != sorted(kinds, key=["ipxe", "cloud-config", "ready"].index):
            problems.append(f"{mac}: events out of order: {kinds}")
        if len(kinds) != len(node.events) or node.state is not State.READY:
            problems.append(f"{mac}: {kinds}, {node.state}")
        if node.boot_count != kinds.count("ipxe"):
            problems.append(f"{mac}: {node.boot_count} boots counted, {kinds.count('ipxe')} served")
        if len({e.id for e in node.events}) != len(node.events):
            problems.append(f"{mac}: an event id twice")
    assert not problems, problems[:10]
    print(
        f"\n{2 * MACHINES} first sightings and {2 * MACHINES} state changes for {MACHINES} "
        f"machines over two servers in {elapsed:.1f} s (sightings {sighted:.1f} s): "
        f"{len(nodes)} records, "
        f"{len({n.hostname for n in nodes.values()})} hostnames, events once each; "
        f"requests answered 503 and retried: {sum(retried.values())}; writes journalled "
        f"(store too slow) and replayed: {journalled}"
    )
