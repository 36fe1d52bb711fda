"""The real server process: what the README promises, on both stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..support.etcd import etcd_prefix
from ..support.net import wait_for
from ..support.server import ServerProcess
from ..support.web import config_path

MAC = "52:54:00:12:34:56"


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pxeserver", "nodes", "--server", server.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def walk_through(server: ServerProcess) -> None:
    status, _, body = server.get("/ipxe?mac=52-54-00-12-34-56")
    assert status == 200
    script = body.decode()
    assert "\nkernel " in script and "\ninitrd " in script
    status, _, body = server.get(config_path(script))
    assert status == 200 and body.startswith(b"#cloud-config\n")
    assert b"hostname: node-001\n" in body
    out = cli(server, "list")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith(MAC))
    assert "node-001" in row and "configured" in row


@pytest.fixture
def server(tmp_path: Path) -> Any:
    s = ServerProcess(tmp_path, args=["--no-dhcp", "--no-tftp"])
    yield s.start()
    s.stop()


def test_embedded_default(server: ServerProcess, tmp_path: Path) -> None:
    walk_through(server)
    assert (tmp_path / "var" / "pxeserver.db").exists()
    # the CLI steers it
    out = cli(server, "set", MAC, "--label", "rack=r1", "--hostname", "web-1")
    assert out.returncode == 0, out.stderr
    shown = json.loads(cli(server, "show", MAC, "--json").stdout)
    assert shown["labels"] == {"rack": "r1"} and shown["hostname"] == "web-1"
    assert "web-1" in cli(server, "list", "--label", "rack=r1").stdout
    text = cli(server, "show", MAC).stdout
    assert "hostname:    web-1\n" in text and "labels:      rack=r1\n" in text
    assert "\ntimeline:\n" in text and "operator" in text.split("timeline:")[1]
    assert cli(server, "set", MAC).returncode == 1  # nothing to set: one line, status 1
    assert cli(server, "forget", MAC).returncode == 0
    out = cli(server, "show", MAC)
    assert out.returncode == 1 and "404 no node with MAC" in out.stderr


def test_records_survive_a_restart(tmp_path: Path) -> None:
    s = ServerProcess(tmp_path, args=["--no-dhcp", "--no-tftp"]).start()
    try:
        s.get(f"/ipxe?mac={MAC}")
    finally:
        s.stop()
    s.start()
    try:
        s.get(f"/ipxe?mac={MAC}")
        s.steps_written()  # a known node's step is written behind the answer
        node = s.json(f"/api/v1/nodes/{MAC}")
        assert node["hostname"] == "node-001" and node["boot_count"] == 2
    finally:
        s.stop()


def test_etcd_store(etcd: Any, tmp_path: Path) -> None:
    prefix = etcd_prefix()
    s = ServerProcess(
        tmp_path,
        settings={"store": {"etcd_prefix": prefix}},
        args=["--no-dhcp", "--no-tftp", "--etcd", etcd.client_url],
    ).start()
    try:
        walk_through(s)
    finally:
        s.stop()
    out = etcd.etcdctl("get", "--prefix", f"{prefix}nodes/")
    key, value = out.splitlines()[:2]
    assert key == f"{prefix}nodes/{MAC}"
    assert json.loads(value)["state"] == "configured"


def test_etcd_stopped_is_503_then_recovers(tmp_path: Path) -> None:
    from ..support.etcd import EtcdMember

    member = EtcdMember("solo", tmp_path / "etcd", tmp_path)
    member.start()
    s = ServerProcess(
        tmp_path / "srv", args=["--no-dhcp", "--no-tftp", "--etcd", member.client_url]
    ).start()
    try:
        assert s.get(f"/ipxe?mac={MAC}")[0] == 200
        member.stop()
        status, headers, body = s.get("/ipxe?mac=52:54:00:00:00:99")
        assert status == 503 and headers["Retry-After"] == "5"
        assert b"store is unavailable" in body
        assert "store unavailable" in s.log()
        member.start()
        # iPXE keeps retrying; the server answers again once etcd is up and the breaker
        # (0.5 s doubling to 5 s) lets the next call through. Generous on a loaded machine.
        wait_for(lambda: s.get("/ipxe?mac=52:54:00:00:00:99")[0] == 200, 30, "recovery", 0.5)
        nodes = s.json("/api/v1/nodes")["nodes"]
        assert sorted(n["hostname"] for n in nodes) == ["node-001", "node-002"]
    finally:
        s.stop()
        member.stop()
