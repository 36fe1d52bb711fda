"""Fixtures of the lab: the node image, labs (namespace, site DHCP, etcd, pxeserver), VMs.

Every test under tests/lab/ is marked ``lab`` (select with ``-m lab``, leave out with
``-m "not lab"``); they run in the default ``scripts/test``. A machine without
/dev/net/tun or network namespaces skips the namespace tests with the reason; a missing
Debian package is an error that names it (CI installs them all).

The VMs boot the lab's node image, a STAND-IN FOR CoreOS built from Debian packages by
tests/lab/build-node-image.sh (CoreOS cannot be fetched here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import harness, netns

HERE = Path(__file__).resolve().parent
TIMINGS: dict[str, Any] = {}

NODE_ARGS = ["console=ttyS0", "panic=5"]  # panic: reboot, and -no-reboot ends QEMU

# The profiles every lab serves; the kernel and initrd are the node image's.
LAB_PROFILES: dict[str, Any] = {
    "lab": {
        "kernel": "lab/vmlinuz",
        "initrd": ["lab/initrd.cpio.gz"],
        "args": NODE_ARGS,
        "cloud_config": "coreos.yaml.j2",
    },
    "lab-tftp": {
        "kernel": "lab/vmlinuz",
        "initrd": ["lab/initrd.cpio.gz"],
        "args": NODE_ARGS,
        "cloud_config": "coreos.yaml.j2",
        "transport": "tftp",
    },
    "lab-operator": {
        "kernel": "lab/vmlinuz",
        "initrd": ["lab/initrd.cpio.gz"],
        "args": [
            *NODE_ARGS,
            "pxelab.profile=operator",
            "pxelab.rack={{ node.labels.get('rack', 'none') }}",
        ],
        "cloud_config": "coreos.yaml.j2",
    },
}

# Machines with a fixed MAC, so that groups can select them (each lab is its own network
# and registry, so these never meet another run's).
TFTP_MAC = "52:54:00:7f:00:06"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def node_image() -> Path:
    """The node image (kernel + initramfs), built or taken from tests/lab/.cache/."""
    missing = harness.missing_tools()
    if missing:
        pytest.fail(missing + " (scripts/setup test installs them)")
    out = subprocess.run(
        [str(HERE / "build-node-image.sh")], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        pytest.fail(f"tests/lab/build-node-image.sh failed:\n{out.stderr}")
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def lab_support() -> None:
    reason = netns.missing_support()
    if reason:
        pytest.skip(reason)
    # A SIGTERM (a CI timeout, a kill) becomes KeyboardInterrupt, so the labs' teardown
    # still stops their processes and deletes their namespaces.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed lab test names the lab's logs, whatever assertion failed."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for value in funcargs.values():
            if isinstance(value, harness.Lab):
                report.sections.append(("lab logs", value.diagnose()))


def start_lab(node_image: Path, settings: dict[str, Any], label: str) -> harness.Lab:
    return harness.Lab(node_image, settings, label).start()


@pytest.fixture(scope="module")
def lab(lab_support: None, node_image: Path) -> Iterator[harness.Lab]:
    """The lab most scenarios share: TTLs long enough that no normal boot is lost."""
    settings = {
        "cluster": {"heartbeat_interval": 5, "heartbeat_ttl": 120, "boot_timeout": 600},
        "profiles": LAB_PROFILES,
        "groups": [
            {"name": "default", "profile": "lab"},
            {"name": "tftp", "profile": "lab-tftp", "selectors": {"mac": TFTP_MAC}},
        ],
    }
    lab = start_lab(node_image, settings, "boot")
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def timings() -> Iterator[dict[str, Any]]:
    """Power-on-to-ready seconds per scenario, written to test-artifacts/lab/timings.json."""
    TIMINGS.clear()
    TIMINGS["load_at_start"] = os.getloadavg()
    TIMINGS["scenarios"] = {}
    started = time.monotonic()
    yield TIMINGS["scenarios"]
    TIMINGS["load_at_end"] = os.getloadavg()
    TIMINGS["lab_seconds"] = round(time.monotonic() - started, 1)
    if TIMINGS["scenarios"]:
        harness.ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = harness.ARTIFACTS / "timings.json"
        path.write_text(json.dumps(TIMINGS, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    scenarios = TIMINGS.get("scenarios")
    if not scenarios:
        return
    tr = terminalreporter
    tr.section("lab: power-on to ready (s)")
    for name, seconds in scenarios.items():
        tr.write_line(f"{name:40} {seconds}")
    tr.write_line(
        f"load average at start {TIMINGS.get('load_at_start')}, at end "
        f"{TIMINGS.get('load_at_end')}; written to {harness.ARTIFACTS / 'timings.json'}"
    )
