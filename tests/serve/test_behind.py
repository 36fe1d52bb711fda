"""Known machines answered from memory, their boot steps written behind the answer, seen
from outside (issue 13, items 1 and 2): real ``pxeserver serve`` processes, real HTTP,
SQLite and a real etcd, ``kill -9``.

- The API shows a step once the write of its batch is done (``pxeserver_steps_recorded``
  on ``/metrics`` says when), never before the answer and never lost.
- ``kill -9`` of the whole server loses no step that was answered: the steps are in the
  workers' step logs before the answer goes out, and a restarted server writes them
  before it answers again. To make that exact, not a matter of timing, the main process
  (which writes them) is stopped with SIGSTOP halfway through a storm; the workers keep
  answering from memory; then everything is killed.
- An operator's change on one server reaches the next answers of another server on the
  same etcd.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pxeserver import daemon
from pxeserver.config import load
from pxeserver.model import MAC, EventKind, Node
from pxeserver.nodes.registry import Change

from ..support.etcd import etcd_prefix
from ..support.net import wait_for
from ..support.server import ServerProcess
from ..support.web import config_path
from .test_crash import Storm, boot_one, check_registry

pytestmark = pytest.mark.slow

RECORDED = re.compile(r'^pxeserver_steps_recorded_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.M)
STEP_TIMES = re.compile(r"^pxeserver_step_delay_seconds_(sum|count) ([0-9.e+]+)$", re.M)


def mac_of(i: int) -> str:
    return f"52:54:00:bb:{i >> 8:02x}:{i & 0xFF:02x}"


@pytest.fixture(params=["sqlite", "etcd"])
def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {}
    member = request.getfixturevalue("etcd")
    return {"store": {"backend": "etcd", "etcd_endpoints": [member.client_url],
                      "etcd_prefix": etcd_prefix(), "timeout": 5}}  # fmt: skip


def server_with(workdir: Path, settings: dict[str, Any], macs: list[str]) -> ServerProcess:
    """A server whose store already has ``macs`` (registered as their first DHCP sighting
    would), so that every boot request of theirs is answered from memory."""
    server = ServerProcess(workdir, settings=settings, args=["--no-dhcp", "--no-tftp"])
    assert server.config is not None
    service = daemon.make_service(load(server.config, {})[0], local=False)
    try:
        for mac in macs:
            service.registry.apply(MAC.parse(mac), Change(EventKind.DHCP, "test"))
    finally:
        service.close()
    return server


def recorded(server: ServerProcess) -> Counter[str]:
    status, _, body = server.get("/metrics")
    assert status == 200
    return Counter({k: int(float(v)) for k, v in RECORDED.findall(body.decode())})


def node(server: ServerProcess, mac: str) -> Any:
    return server.json(f"/api/v1/nodes/{mac}")


def test_the_api_shows_each_step_once_its_write_is_done(
    tmp_path: Path, store_settings: dict[str, Any]
) -> None:
    macs = [mac_of(i) for i in range(20)]
    settings = {**store_settings, "paths": {"data_dir": str(tmp_path / "var")}}
    server = server_with(tmp_path, settings, macs).start()
    try:
        scripts: dict[str, str] = {}
        for step, state, total in (("ipxe", "booting", 20), ("cloud-config", "configured", 40)):
            for mac in macs:
                if step == "ipxe":
                    status, _, body = server.get(f"/ipxe?mac={mac}")
                    scripts[mac] = body.decode()
                else:  # the config URL of its script (a one-time secret in it)
                    status = server.get(config_path(scripts[mac]))[0]
                assert status == 200
            wait_for(lambda total=total: recorded(server)["written"] >= total, 30,  # type: ignore[misc]
                     f"{total} steps to be written")  # fmt: skip
            # written: the API shows every one of them, at once (no waiting here)
            for mac in macs:
                shown = node(server, mac)
                assert shown["state"] == state and shown["boot_count"] == 1, (mac, shown)
        assert recorded(server) == Counter({"written": 40})  # none dropped, none journalled
        times = dict(STEP_TIMES.findall(server.get("/metrics")[2].decode()))
        print(f"\nsteps written behind the answer: 40 in {float(times['count']):.0f} writes, "
              f"oldest step waited {float(times['sum']) / float(times['count']) * 1000:.0f} ms "
              "on average")  # fmt: skip
    finally:
        server.stop()


def noted_not_done(data: Path) -> int:
    """Bytes in the step logs that no write has taken yet."""
    left = 0
    for log in (data / "steps").glob("*.log"):
        done = log.with_name(log.name + ".done")
        left += log.stat().st_size - (int(done.read_text() or 0) if done.exists() else 0)
    return left


def test_kill_9_loses_no_answered_step(tmp_path: Path, store_settings: dict[str, Any]) -> None:
    machines = 100
    macs = [mac_of(i) for i in range(machines)]
    data = tmp_path / "var"
    settings = {**store_settings, "paths": {"data_dir": str(data)}}
    server = server_with(tmp_path, settings, macs).start()
    storm = Storm()
    steps = ("ipxe", "cloud-config")
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(boot_one, server, storm, mac, steps) for mac in macs]
            wait_for(lambda: storm.acked_total >= machines, 60, "half of the steps")
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGSTOP)  # the main process: nothing is written
            assert all(f.result() for f in futures), "the workers answer without it"
        wait_for(lambda: noted_not_done(data) > 0, 10, "steps noted and not written")
        left = noted_not_done(data)
        server.kill()  # SIGKILL to the whole server, main process and HTTP workers
        assert storm.acked_total == machines * len(steps)
        server.start()  # writes what the logs hold before it answers
        store = daemon.make_store(load(server.config, {})[0])  # type: ignore[arg-type]
        try:
            nodes: dict[str, Node] = {v.node.mac.value: v.node for v in store.scan()}
        finally:
            store.close()
        figures = check_registry(nodes, storm)
        assert figures["in_flight_applied"] == 0  # every step was answered: exactly once
        assert noted_not_done(data) == 0 and "Traceback" not in server.log()
    finally:
        server.stop()
    print(f"\nkill -9 figures: {storm.acked_total} steps answered, {left} bytes of them "
          "noted and not written at the kill; after the restart all of them are in the store, "
          "each once")  # fmt: skip


def profile_of(server: ServerProcess, mac: str) -> str:
    status, _, body = server.get(f"/ipxe?mac={mac}")
    assert status == 200
    return body.decode().split("boots profile ", 1)[1].split("\n", 1)[0].strip("'")


@pytest.mark.etcd
def test_an_operator_change_on_one_server_reaches_the_other(etcd: Any, tmp_path: Path) -> None:
    prefix = etcd_prefix()
    mac = mac_of(0xAB)
    settings = {"store": {"backend": "etcd", "etcd_endpoints": [etcd.client_url],
                          "etcd_prefix": prefix}}  # fmt: skip
    # One HTTP worker on the server that makes the change: "at once" is that worker's
    # (another worker of the same server sees it as the other server does).
    a = server_with(tmp_path / "a", {**settings, "paths": {"data_dir": str(tmp_path / "a/var")},
                                     "server": {"http_workers": 1}}, [mac]).start()  # fmt: skip
    b = ServerProcess(tmp_path / "b", settings={**settings,
                      "paths": {"data_dir": str(tmp_path / "b/var")}},
                      args=["--no-dhcp", "--no-tftp"]).start()  # fmt: skip
    try:
        assert profile_of(b, mac) == "flatcar"
        changed = time.monotonic()
        assert a.request("PATCH", f"/api/v1/nodes/{mac}", {"profile": "coreos"})[0] == 200
        assert profile_of(a, mac) == "coreos"  # the server that made it: at once
        stale = 0
        while profile_of(b, mac) != "coreos":
            stale += 1
            assert time.monotonic() - changed < 10, "the change never reached the other server"
        took = time.monotonic() - changed
        assert all(profile_of(b, mac) == "coreos" for _ in range(20))  # and it stays
    finally:
        a.stop()
        b.stop()
    print(
        f"\nan operator's change on one server reached the other's answers after {stale} "
        f"stale answers, {took * 1000:.0f} ms after the PATCH was answered"
    )
