"""pxeserver.commands.demo's pure parts; the demo itself boots a VM in tests/lab/test_demo.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxeserver.commands import demo
from pxeserver.model import MAC

from ..support.net import free_port


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


def test_the_demo_waits_a_bounded_time_for_its_server() -> None:
    """Pasted at once, ``serve … &`` and ``demo`` start together: the demo waits."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    said: list[str] = []
    server = HTTPServer(("127.0.0.1", port), Health, bind_and_activate=False)
    starter = threading.Timer(1.0, lambda: (server.server_bind(), server.server_activate(),
                                            server.serve_forever()))  # fmt: skip
    starter.start()
    try:
        demo.wait_for_server(f"http://127.0.0.1:{port}", 30, said.append)
    finally:
        server.shutdown()
        starter.join(10)
        server.server_close()
    assert said == [f"demo: waiting for the server at http://127.0.0.1:{port} (up to 30 s)"]
    # Nothing ever answers: an error after the wait, with what to start.
    with pytest.raises(demo.DemoError) as never:
        demo.wait_for_server(f"http://127.0.0.1:{free_port()}", 1, said.append)
    assert "for the demo, serve the lab's node image: tests/lab/build-node-image.sh" in str(
        never.value
    )
    assert "serve --config tests/lab/demo.yaml" in str(never.value)


def test_the_last_lines_of_the_console_are_plain_text(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(
        b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\n\r\n"
        b"Press Ctrl-B for the iPXE command line...\x08 \x08\x08 \x08\r\n"
        b"http://10.0.2.2:8080/assets/k... No such file or directory\r\n"
    )
    said: list[str] = []
    demo._last_words(log, said.append)
    assert said == [
        "demo: the machine's last lines on its console:",
        "  SeaBIOS (version 1.16.2)",
        "  Press Ctrl-B for the iPXE command line...",
        "  http://10.0.2.2:8080/assets/k... No such file or directory",
    ]
