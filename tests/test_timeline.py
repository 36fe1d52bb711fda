"""Boot timelines (how long each step took) and the one log line per milestone."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pxeserver.logs import JsonFormatter
from pxeserver.model import MAC, Event, EventKind, Node, State
from pxeserver.timeline import durations, milestone

from .support.server import ServerProcess
from .support.web import served_config


def ev(kind: EventKind, at: float, count: int = 1) -> Event:
    return Event(kind, at, State.BOOTING, count=count)


def test_each_step_took_the_time_since_the_previous_step_of_its_boot() -> None:
    events = [
        ev(EventKind.DHCP, 100),
        ev(EventKind.TFTP, 101.5),
        ev(EventKind.TFTP, 102),  # the kernel after the loader
        ev(EventKind.IPXE, 104),
        ev(EventKind.OPERATOR, 105),  # not a boot step, skipped over
        ev(EventKind.CLOUD_CONFIG, 130),
        ev(EventKind.READY, 190),
        ev(EventKind.HEARTBEAT, 400, count=7),
        ev(EventKind.LOST, 600),
        ev(EventKind.DHCP, 700),  # a new boot
        ev(EventKind.IPXE, 703),
        ev(EventKind.IPXE, 800),  # served again: another boot
    ]
    assert durations(events) == [None, 1.5, 0.5, 2, None, 26, 60, None, 200, None, 3, None]


def test_a_boot_that_starts_at_the_script_has_no_first_duration() -> None:
    assert durations([ev(EventKind.IPXE, 5), ev(EventKind.IGNITION, 9)]) == [None, 4]
    assert durations([ev(EventKind.READY, 5), ev(EventKind.IPXE, 6)]) == [None, None]


def node_with(*events: Event) -> Node:
    return Node(MAC.parse("52:54:00:00:00:44"), "node-044", state=State.CONFIGURED, events=events)


def test_milestone_line_carries_the_node_as_fields(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("pxeserver.test")
    node = node_with(ev(EventKind.IPXE, 10), ev(EventKind.CLOUD_CONFIG, 12.5))
    with caplog.at_level(logging.INFO, logger="pxeserver.test"):
        milestone(log, node, EventKind.CLOUD_CONFIG, "profile coreos")
    record = caplog.records[-1]
    assert record.getMessage() == (
        "52:54:00:00:00:44 node-044: cloud-config → configured (profile coreos), "
        "2.5 s after the previous step"
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["mac"] == "52:54:00:00:00:44" and line["hostname"] == "node-044"
    assert line["event"] == "cloud-config" and line["state"] == "configured"
    assert line["took"] == 2.5 and line["level"] == "INFO"


def milestones(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if "52:54:00:00:00:45" in line]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_server_logs_one_line_per_milestone(tmp_path: Path, fmt: str) -> None:
    args = ["--no-dhcp", "--no-tftp"] + (["--log-format", "json"] if fmt == "json" else [])
    server = ServerProcess(tmp_path, args=args).start()
    try:
        assert served_config(server, "52-54-00-00-00-45")[0] == 200
    finally:
        server.stop()
    lines = milestones(server)
    assert len(lines) == 2, server.log()
    if fmt == "text":
        assert "52:54:00:00:00:45 node-001: ipxe → booting (profile flatcar)" in lines[0]
        assert "INFO" in lines[0] and "s after the previous step" in lines[1]
        return
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "ipxe" and first["state"] == "booting" and first["took"] is None
    assert second["event"] == "cloud-config" and second["mac"] == "52:54:00:00:00:45"
    assert second["hostname"] == "node-001" and second["took"] >= 0
