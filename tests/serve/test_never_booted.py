"""Made-up MACs leave at most ``limits.never_booted`` records, on every path (issue 16,
item 5): HTTP (``/ipxe``, ``/cloud-config``) against a real ``pxeserver serve`` with two
workers, TFTP ``pxelinux.cfg/01-<mac>`` against its TFTP service, and DHCP sightings through
the live ProxyDHCP. Machines that booted, and nodes an operator touched, are never among
the ones that make way."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pxeserver.daemon import make_service
from pxeserver.dhcp.proxy import ProxyDhcp
from pxeserver.model import MAC, EventKind, Machine
from pxeserver.nodes.registry import Change

from ..support.dhcp import exchange, golden
from ..support.net import free_port
from ..support.server import ServerProcess
from ..support.settings import LAB_PROFILES, make_settings
from ..support.tftp import fetch
from ..support.web import served_config

pytestmark = pytest.mark.slow

PROFILES = {"profiles": LAB_PROFILES, "groups": [{"name": "default", "profile": "coreos"}]}
BOOTED = "52:54:00:0d:00:01"
LABELLED = "52:54:00:0d:00:02"


def made_up(i: int) -> str:
    return f"02:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}:00"


def never_booted(server: ServerProcess) -> int:
    nodes = server.json("/api/v1/nodes")["nodes"]
    return sum(n["last_heartbeat"] is None and not n["labels"] and n["assigned_profile"] is None
               for n in nodes)  # fmt: skip


def metric(server: ServerProcess, name: str) -> float:
    _, _, body = server.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def keep(server: ServerProcess) -> None:
    """A machine that booted, and one an operator labelled: the bound never takes them."""
    _, _, body = served_config(server, BOOTED)
    token = body.decode().split("Authorization: Bearer ")[1].split('"')[0]
    auth = {"Authorization": f"Bearer {token}"}
    assert server.request("POST", f"/api/v1/nodes/{BOOTED}/ready", headers=auth)[0] == 200
    server.get(f"/ipxe?mac={LABELLED}")
    labels = {"labels": {"rack": "r1"}}
    assert server.request("PATCH", f"/api/v1/nodes/{LABELLED}", labels)[0] == 200


def kept(server: ServerProcess) -> bool:
    return all(server.get(f"/api/v1/nodes/{mac}")[0] == 200 for mac in (BOOTED, LABELLED))


def test_5000_made_up_macs_over_http_add_at_most_the_bound(tmp_path: Path) -> None:
    bound = 100
    settings = {**PROFILES, "limits": {"never_booted": bound}}
    server = ServerProcess(tmp_path, settings=settings, args=["--no-dhcp", "--no-tftp"]).start()
    peaks: list[int] = []
    try:
        keep(server)

        answered: list[tuple[float, int]] = []  # (when, i) of each /ipxe answered

        def ask(worker: int) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
            asked = 0
            for i in range(worker, 5000, 16):
                # /ipxe makes a record; /cloud-config without its script's secret is
                # refused and makes none (docs/SECURITY.md, "The config of a boot")
                path = "/cloud-config" if i % 4 == 3 else "/ipxe"
                conn.request("GET", f"{path}?mac={made_up(i)}")
                conn.getresponse().read()
                if path == "/ipxe":
                    answered.append((time.monotonic(), i))
                asked += 1
            conn.close()
            return asked

        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            flood = [pool.submit(ask, w) for w in range(16)]
            while not all(f.done() for f in flood):
                peaks.append(never_booted(server))  # while the flood lasts
                time.sleep(0.2)
            assert sum(f.result() for f in flood) == 5000
        took = time.monotonic() - started
        peaks.append(never_booted(server))
        print(f"\n5,000 made-up MACs over HTTP in {took:.1f} s: at most {max(peaks)} "
              f"never-booted records at {len(peaks)} looks")  # fmt: skip
        assert max(peaks) <= bound, peaks
        dropped = metric(server, "pxeserver_never_booted_dropped")
        assert kept(server)
        # The newest stays: the MAC answered last (the threads go at their own pace, and
        # the last MAC of one thread may be long past).
        newest = max(answered)[1]
        assert server.get(f"/api/v1/nodes/{made_up(newest)}")[0] == 200, newest
        assert server.get(f"/api/v1/nodes/{made_up(4999)}")[0] == 404  # a refused config
    finally:
        server.stop()
    # The control: the flood did make its records (its 3,750 /ipxe), and the oldest
    # made way for them.
    assert dropped >= 5000 - 5000 // 4 - bound


def test_made_up_macs_over_tftp_pxelinux_add_at_most_the_bound(tmp_path: Path) -> None:
    bound = 20
    settings = {
        **PROFILES,
        "limits": {"never_booted": bound, "tftp_requests_per_client": 100_000},
    }
    tftp = free_port(socket.SOCK_DGRAM)
    args = ["--no-dhcp", "--tftp-port", str(tftp), "--listen", "127.0.0.1"]
    server = ServerProcess(tmp_path, settings=settings, args=args).start()
    try:
        keep(server)
        for i in range(150):
            name = "pxelinux.cfg/01-" + made_up(i).replace(":", "-")
            assert b"KERNEL" in fetch(tftp, name)
            if i % 10 == 9:
                assert never_booted(server) <= bound, i
        assert kept(server)
        assert metric(server, "pxeserver_never_booted_dropped") >= 150 - bound  # the control
    finally:
        server.stop()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[ProxyDhcp, Any]]:
    settings = make_settings(
        tmp_path, {"limits": {"never_booted": 20, "new_macs_per_second": 100_000}}
    )
    service = make_service(settings)
    (tmp_path / "tftproot").mkdir(exist_ok=True)
    p = ProxyDhcp(service, address="127.0.0.1", dhcp_port=0, pxe_port=0,
                  tftp_root=tmp_path / "tftproot").start()  # fmt: skip
    service.start_background()
    yield p, service
    p.stop()
    service.stop_background()
    service.close()


def test_made_up_macs_in_dhcp_sightings_add_at_most_the_bound(
    proxy: tuple[ProxyDhcp, Any],
) -> None:
    p, service = proxy
    discover = golden("bios-pxe-discover")
    booted = MAC.parse(BOOTED)
    service.registry.apply(booted, Change(EventKind.DHCP, "racked", Machine(booted)))
    service.registry.phone_home(booted, service.registry.require(booted).token, EventKind.READY)
    for i in range(300):
        mac = bytes.fromhex(made_up(i).replace(":", ""))
        assert exchange(p.ports["dhcp"], discover[:28] + mac + discover[34:], 3.0) is not None
        if i % 50 == 49:
            assert service.flush_background(30)
            assert sum(n.never_booted for n in service.registry.all()) <= 20, i
    assert service.flush_background(30)
    assert service.registry.get(booted) is not None
    assert service.sightings.counters["written"] >= 300  # the control: each was recorded
    assert service.registry.never_booted.dropped >= 300 - 20
