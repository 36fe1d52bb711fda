"""One server per port and per data folder: a second ``pxeserver serve`` is refused in one
line that names what is taken, who has it and what to do, without a traceback.

Before, a second server on the same ports started without a word and shared them (granian
binds HTTP with SO_REUSEPORT, TFTP and ProxyDHCP bound with SO_REUSEADDR): requests went
to one server or the other, each with its own registry; and a second server in the same
folder emptied the first one's metrics files.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support.net import free_port
from ..support.server import ServerProcess

MAC = "52:54:00:0f:00:01"


def serve(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A second ``pxeserver serve`` that must not start (it would run until stopped)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "pxeserver", "serve", "--listen", "127.0.0.1", *args],
        cwd=workdir, capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def refusal(out: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start prints; fails unless that is all it printed."""
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 1, lines
    assert "Traceback" not in out.stderr and len(lines) == 1, lines
    return lines[0]


def udp_ports(n: int) -> list[int]:
    return [free_port(socket.SOCK_DGRAM) for _ in range(n)]


class Server(ServerProcess):
    """A server with all its services, on ports of its own (ProxyDHCP's too)."""

    def __init__(self, workdir: Path) -> None:
        self.ports = dict(zip(("tftp", "dhcp", "pxe"), udp_ports(3), strict=True))
        flags = [f"--{name}-port={port}" for name, port in self.ports.items()]
        super().__init__(workdir, args=["--listen", "127.0.0.1", *flags])

    def flags(self, **changed: int) -> list[str]:
        """The flags of a server on these ports, but for those ``changed``."""
        ports = {"http": self.http_port, **self.ports, **changed}
        return [f"--{name}-port={port}" for name, port in ports.items()]


@pytest.fixture
def first(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "a")
    server.start()
    yield server
    server.stop()


def fresh_ports() -> dict[str, int]:
    return dict(zip(("http", "tftp", "dhcp", "pxe"), [free_port(), *udp_ports(3)], strict=True))


def test_a_second_server_on_the_same_ports_is_refused(first: Server, tmp_path: Path) -> None:
    assert first.proc is not None
    pid = first.proc.pid
    other = tmp_path / "b"  # its own data folder: only the ports are shared
    for taken in ("http", "tftp", "dhcp", "pxe"):
        port = first.http_port if taken == "http" else first.ports[taken]
        line = refusal(serve(other, *first.flags(**{**fresh_ports(), taken: port})))
        flag = f"--{taken}-port"
        assert f"127.0.0.1:{port}: the pxeserver with PID {pid} serves port {port}; " in line, line
        assert line.endswith(f"stop it (kill {pid}) or choose another port with {flag}"), line
    # The first server still answers alone, from its own registry.
    assert first.get(f"/ipxe?mac={MAC}")[0] == 200
    assert [n["mac"] for n in first.json("/api/v1/nodes")["nodes"]] == [MAC]


def test_port_67_is_shared_with_other_programs_but_not_with_another_pxeserver(
    first: Server, tmp_path: Path
) -> None:
    """ProxyDHCP's port 67 takes SO_REUSEADDR on purpose (the site's DHCP server may run
    on the same machine): the kernel would let a second pxeserver in; the claim does not."""
    dhcp = first.ports["dhcp"]
    site = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    site.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        site.bind(("127.0.0.1", dhcp))  # what the site's dnsmasq does: allowed
    finally:
        site.close()
    line = refusal(serve(tmp_path / "b", *first.flags(**{**fresh_ports(), "dhcp": dhcp})))
    assert f"cannot bind ProxyDHCP to 127.0.0.1:{dhcp}: the pxeserver with PID" in line, line


def test_a_second_server_on_the_same_data_folder_is_refused_and_metrics_stay(
    first: Server,
) -> None:
    assert first.proc is not None
    assert first.get(f"/ipxe?mac={MAC}")[0] == 200
    before = boots_started(first)
    assert before == 1
    # Same folder (the same working directory: ./var), every port its own.
    line = refusal(serve(first.workdir, *first.flags(**fresh_ports())))
    folder = (first.workdir / "var").resolve()
    assert line.endswith(
        f"the data folder {folder} is in use by the pxeserver with PID {first.proc.pid}; "
        f"stop it (kill {first.proc.pid}) or give this one another folder with --data-dir"
    ), line
    assert any((folder / "metrics").iterdir())
    assert boots_started(first) == before  # its counters were not emptied under it


def boots_started(server: ServerProcess) -> float:
    _, _, body = server.get("/metrics")
    found = re.search(rb'^pxeserver_boots_started_total\{profile="\w+"\} ([0-9.]+)$', body, re.M)
    return float(found.group(1)) if found else 0.0


def test_ports_held_by_other_programs_are_one_line(tmp_path: Path) -> None:
    """An HTTP port another program listens on gave a ~110-line Python and Rust traceback."""
    http = socket.socket()
    http.bind(("127.0.0.1", 0))
    http.listen()
    tftp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tftp.bind(("127.0.0.1", 0))
    try:
        port = http.getsockname()[1]
        line = refusal(serve(tmp_path / "h", f"--http-port={port}", "--no-dhcp", "--no-tftp"))
        assert line.endswith(
            f"cannot bind HTTP to 127.0.0.1:{port}: port {port} is in use by another program "
            f"(`ss -lntup 'sport = :{port}'` names it); stop it or choose another port with "
            "--http-port"
        ), line
        port = tftp.getsockname()[1]
        line = refusal(serve(tmp_path / "t", f"--http-port={free_port()}", "--no-dhcp",
                             f"--tftp-port={port}"))  # fmt: skip
        assert f"cannot bind TFTP to 127.0.0.1:{port}: port {port} is in use by another " in line
    finally:
        http.close()
        tftp.close()


def test_servers_with_their_own_ports_and_folders_run_side_by_side(
    first: Server, tmp_path: Path
) -> None:
    """The positive control: what is refused above is only what is taken."""
    second = Server(tmp_path / "b")
    second.start()
    try:
        assert second.get(f"/ipxe?mac={MAC}")[0] == 200
        assert first.json("/api/v1/nodes")["count"] == 0
        assert second.json("/api/v1/nodes")["count"] == 1
    finally:
        second.stop()
    # Stopped, it let go of its folder and ports: the same start works again.
    second.start()
    second.stop()
