"""A normal start and stop say nothing alarming, and the stop is quick.

Found by a new user: Ctrl-C took 6.5 s and printed "Killing worker-2 after it refused to
gracefully stop" (the HTTP workers got the terminal's SIGINT and then their parent's
SIGTERM, which could hang granian's worker); a SIGTERM to the process group (systemd's
default) logged a false ERROR about a TFTP transfer process that "exited with -15" and
started a new one while the server was stopping; every start printed granian's warning
about its thread count.

Ctrl-C is a SIGINT to the whole foreground process group; ``kill PID`` a SIGTERM to the
main process; systemd (KillMode=control-group) a SIGTERM to every process. Each must
end the server within 2 s with no WARNING or ERROR line. A machine shared with other
test runs can be slow for a moment, so the 2 s is asserted of the quickest of up to
three stops; every stop must be quiet, and none may reach granian's kill timeout.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from ..support.net import free_port
from ..support.server import ServerProcess
from ..support.settings import REPO
from ..support.tftp import fetch

STOP_WITHIN_S = 2.0
ATTEMPTS = 3
ALARM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|refused to gracefully stop")


def good_settings(tmp_path: Path) -> dict[str, object]:
    """Settings under which a start has nothing to warn about: every file is there."""
    assets = tmp_path / "assets" / "lab"
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "vmlinuz").write_bytes(b"kernel")
    (assets / "initrd.cpio.gz").write_bytes(b"initrd")
    return {
        "server": {"listen": "127.0.0.1", "dhcp": False},
        "paths": {
            "data_dir": str(tmp_path / "var"),
            "assets_dir": str(tmp_path / "assets"),
            "tftp_root": str(REPO / "tftproot"),
            "templates_dir": str(REPO / "cloud-configs"),
        },
        # No etcd for the nodes: a loopback one is warned about at start (a node's etcd
        # proxy would talk to itself), and any other is probed, off this machine.
        "cluster": {"etcd_endpoints": []},
        "profiles": {
            "lab": {
                "kernel": "lab/vmlinuz",
                "initrd": ["lab/initrd.cpio.gz"],
                "cloud_config": "coreos.yaml.j2",
            }
        },
        "groups": [{"name": "default", "profile": "lab"}],
    }


def run_and_stop(tmp_path: Path, how: str) -> tuple[float, str]:
    """Start a server, make it work (HTTP and a TFTP transfer), stop it as ``how`` says;
    how long the stop took, and the whole log."""
    tftp_port = free_port(socket.SOCK_DGRAM)
    server = ServerProcess(tmp_path, settings=good_settings(tmp_path),
                           args=["--tftp-port", str(tftp_port)])  # fmt: skip
    server.start()
    assert server.proc is not None
    try:
        assert server.get("/ipxe?mac=52:54:00:5a:00:01")[0] == 200
        assert fetch(tftp_port, "undionly.kpxe") == (REPO / "tftproot/undionly.kpxe").read_bytes()
        started = time.monotonic()
        if how == "ctrl-c":
            os.killpg(server.proc.pid, signal.SIGINT)
        elif how == "kill":
            os.kill(server.proc.pid, signal.SIGTERM)
        else:  # systemd's KillMode=control-group
            os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
        took = time.monotonic() - started
        assert server.proc.returncode == 0, server.log()
    finally:
        server.kill()
    return took, server.log()


@pytest.mark.parametrize("how", ["ctrl-c", "kill", "sigterm-to-group"])
def test_stop_is_quiet_and_within_two_seconds(tmp_path: Path, how: str) -> None:
    stops = []
    for attempt in range(ATTEMPTS):
        took, log = run_and_stop(tmp_path / str(attempt), how)
        alarms = [line for line in log.splitlines() if ALARM.search(line)]
        assert not alarms, f"{how}: {alarms}\n{log}"
        assert "pxeserver stopped" in log and "Granian shutdown completed" in log, log
        stops.append(took)
        if took < STOP_WITHIN_S:
            break
    assert min(stops) < STOP_WITHIN_S, f"{how}: stops took {stops} s"


def test_the_alarm_pattern_catches_what_a_stop_used_to_print() -> None:
    """Positive control of the assertion above: the lines seen before the fix."""
    before = [
        "[WARNING] Killing worker-2 after it refused to gracefully stop",
        "2026-12-04 12:00:00,000 ERROR   pxeserver.tftp.pool: TFTP: transfer process 0 "
        "(pid 42) exited with -15; 0 transfers lost (their clients will retry); started a "
        "new one",
        "[WARNING] Configuration allows spawning up to 8 Python threads, which seems quite high",
    ]
    assert all(ALARM.search(line) for line in before)
    assert not ALARM.search("2026-12-04 12:00:00,000 INFO    pxeserver.daemon: pxeserver stopped")
