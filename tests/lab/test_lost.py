"""Machines that lose power: their node stays where it stopped, then is marked lost.

This module runs its own lab with short deadlines (``cluster.boot_timeout`` and
``cluster.heartbeat_ttl``), so that waiting for them costs seconds, not minutes; the
shared lab keeps long ones so that no slow but healthy boot is ever marked lost there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import LAB_PROFILES, start_lab
from .harness import Lab, iso_time

BOOT_TIMEOUT_S = 20
HEARTBEAT_TTL_S = 10


@pytest.fixture(scope="module")
def short_lab(lab_support: None, node_image: Path) -> Iterator[Lab]:
    settings = {
        "cluster": {
            "heartbeat_interval": 2,
            "heartbeat_ttl": HEARTBEAT_TTL_S,
            "boot_timeout": BOOT_TIMEOUT_S,
        },
        "profiles": LAB_PROFILES,
        "groups": [{"name": "default", "profile": "lab"}],
    }
    lab = start_lab(node_image, settings, "lost")
    yield lab
    lab.stop()


def watch_until_lost(lab: Lab, mac: str, last: str, limit: float) -> dict[str, Any]:
    """Poll the node: it must stay in ``last`` until it turns ``lost`` (within ``limit``)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        node = lab.node(mac)
        assert node is not None
        if node["state"] == "lost":
            return node
        assert node["state"] == last, f"{mac} moved from {last} to {node['state']} while dead"
        time.sleep(0.5)
    raise AssertionError(f"{mac} still {last} after {limit} s\n{lab.diagnose()}")


def wait_heartbeat(lab: Lab, mac: str, limit: float) -> dict[str, Any]:
    """The node once a heartbeat is recorded: heartbeats are what keep it ready."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        node = lab.node(mac)
        if node is not None and any(e["kind"] == "heartbeat" for e in node["events"]):
            return node
        time.sleep(0.5)
    raise AssertionError(f"{mac} sent no heartbeat within {limit} s\n{lab.diagnose()}")


def test_machines_killed_mid_boot_and_when_ready_are_lost(short_lab: Lab) -> None:
    lab = short_lab
    mid, done = lab.add_vm("bios"), lab.add_vm("bios")
    mid.power_on()
    done.power_on()
    # Pull the plug on the first one as soon as it has its iPXE script (kernel loading).
    node = lab.wait_for(mid, {"booting", "configured"}, 300)
    mid.kill()
    after_kill = lab.node(mid.mac)
    assert after_kill is not None and after_kill["state"] in ("booting", "configured")
    last = after_kill["state"]

    lab.wait_for(done, {"ready"}, 300)
    beating = wait_heartbeat(lab, str(done.mac), 60)
    assert beating["state"] == "ready", beating
    done.kill()

    lost = watch_until_lost(lab, str(mid.mac), last, BOOT_TIMEOUT_S + 30)
    event = lost["events"][-1]
    assert event["kind"] == "lost" and f"while {last}" in event["detail"], lost["events"]
    silent = iso_time(event["at"]) - iso_time(after_kill["last_seen"])
    assert silent >= BOOT_TIMEOUT_S, f"lost after {silent:.1f} s, before boot_timeout"
    assert lost["hostname"] == node["hostname"]

    gone = watch_until_lost(lab, str(done.mac), "ready", HEARTBEAT_TTL_S + 30)
    event = gone["events"][-1]
    assert event["kind"] == "lost" and "while ready" in event["detail"], gone["events"]
    assert iso_time(event["at"]) - iso_time(gone["last_heartbeat"]) >= HEARTBEAT_TTL_S
