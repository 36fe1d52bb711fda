"""The node image's console lines, parsed (no VM needed)."""

from __future__ import annotations

from pathlib import Path

from .console import parse_line, read_steps


def test_a_step_line_with_quoted_values() -> None:
    step = parse_line(
        "\x1b[0mPXELAB step=cmdline cmdline='console=ttyS0 cloud-config-url=http://x/?mac=1'"
    )
    assert step is not None and step.name == "cmdline"
    assert step["cmdline"] == "console=ttyS0 cloud-config-url=http://x/?mac=1"


def test_quotes_inside_values_survive() -> None:
    step = parse_line("PXELAB step=failed reason='it'\\''s broken'")
    assert step is not None and step["reason"] == "it's broken"


def test_lines_that_are_not_steps() -> None:
    assert parse_line("[    1.2] virtio_net virtio0 eth0: renamed") is None
    assert parse_line("PXELAB kernel=6.1") is None  # no step=
    assert parse_line("PXELAB step=ready answer='cut sho") is None  # cut mid-write


def test_read_steps_skips_noise(tmp_path: Path) -> None:
    log = tmp_path / "serial"
    log.write_bytes(
        b"BdsDxe: loading\r\nPXELAB step=boot kernel=6.1\r\n\xff\xfe\nPXELAB step=dhcp ip=1\n"
    )
    assert [s.name for s in read_steps(log)] == ["boot", "dhcp"]
    assert read_steps(tmp_path / "absent") == []
