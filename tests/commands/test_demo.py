"""pxeserver.commands.demo's pure parts; the demo itself boots a VM in tests/lab/test_demo.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxeserver.commands import demo
from pxeserver.model import MAC


@pytest.mark.parametrize(
    ("server", "seen_by_vm"),
    [
        ("http://127.0.0.1:8080", "http://10.0.2.2:8080"),
        ("http://localhost:8080/", "http://10.0.2.2:8080"),
        ("http://0.0.0.0", "http://10.0.2.2"),
        ("http://192.0.2.7:8080", "http://192.0.2.7:8080"),
    ],
)
def test_guest_url_maps_loopback_to_the_slirp_host(server: str, seen_by_vm: str) -> None:
    assert demo.guest_url(server) == seen_by_vm


def test_qemu_command_is_tcg_bios_with_the_boot_file(tmp_path: Path) -> None:
    mac = MAC.parse("52:54:00:00:00:01")
    cmd = demo.qemu_command(mac, "http://10.0.2.2:8080/boot.ipxe", tmp_path / "s.log")
    joined = " ".join(cmd)
    assert "-accel tcg" in joined and "kvm" not in joined
    assert "bootfile=http://10.0.2.2:8080/boot.ipxe" in joined
    assert f"mac={mac}" in joined
    assert f"file:{tmp_path / 's.log'}" in joined


def test_random_macs_are_qemu_range_and_differ() -> None:
    macs = {demo.random_mac() for _ in range(20)}
    assert len(macs) > 1
    assert all(m.value.startswith("52:54:00:") for m in macs)


def test_console_lines_are_read_once_and_only_whole(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    follow = demo.Follow()
    assert demo.new_console_lines(log, follow) == []
    log.write_bytes(b"SeaBIOS noise\r\nPXELAB step=boot kernel=6.1\r\nPXELAB step=dh")
    assert demo.new_console_lines(log, follow) == ["step=boot kernel=6.1"]
    with open(log, "ab") as f:
        f.write(b"cp ip=10.0.2.15\n")
    assert demo.new_console_lines(log, follow) == ["step=dhcp ip=10.0.2.15"]
    assert demo.new_console_lines(log, follow) == []


def test_demo_without_a_server_says_how_to_start_one() -> None:
    with pytest.raises(demo.DemoError, match="pxeserver serve"):
        demo.api_get("http://127.0.0.1:1", "/healthz")
