"""Slow and idle HTTP connections cannot stop ``pxeserver serve`` (issue 16, item 5).

A real server runs in a network namespace of the test's own, on 192.0.2.1; a client at
192.0.2.3 holds thousands of connections that never finish a request, plus requests whose
body never arrives and answers it never reads; a machine at 192.0.2.2 asks for its boot
script meanwhile. The requirement: its ``/ipxe`` and ``/healthz`` answer within 1 s while
the slow connections are held (1 s bounds how long the test waits for each answer). Every
socket is made inside the namespace: nothing leaves it.

Before the defences, about 1,100 such connections (granian's default of 512 per worker),
or 16 slow requests (the workers' threads), stopped every answer.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..lab.netns import Namespace, stop_process
from ..support.net import wait_for
from ..support.server import ServerProcess
from ..support.settings import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

SERVER, MACHINE, SLOW = "192.0.2.1", "192.0.2.2", "192.0.2.3"
PORT = 8080
KNOWN = "52:54:00:0b:00:01"
HEAD = f"GET /ipxe?mac={KNOWN} HTTP/1.1\r\nHost: {SERVER}:{PORT}\r\n".encode()  # never ends
HELD = 3000


def open_from(source: str, count: int, first: bytes = b"", rcvbuf: int = 0) -> list[Any]:
    """``count`` connections from ``source`` (call it inside the namespace), each having
    sent ``first``."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((source, 0))
        s.settimeout(10)
        s.connect((SERVER, PORT))
        if first:
            s.sendall(first)
        socks.append(s)
    return socks


def held(s: socket.socket) -> bool:
    """True while the server keeps the connection open (it may have sent something)."""
    timeout = s.gettimeout()
    s.settimeout(0)  # look, do not wait
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.settimeout(timeout)


def answer(path: str, bound: float) -> tuple[int, bytes]:
    """Ask from the machine's address; the status and body, or TimeoutError after
    ``bound`` seconds in all (call it inside the namespace)."""
    deadline = time.monotonic() + bound
    with socket.create_connection((SERVER, PORT), timeout=bound, source_address=(MACHINE, 0)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {SERVER}:{PORT}\r\nConnection: close\r\n\r\n"
                  .encode())  # fmt: skip
        data = b""
        while True:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class NamespacedServer:
    """``pxeserver serve`` inside the namespace, on SERVER:PORT; stopped by its PID."""

    def __init__(self, ns: Namespace, workdir: Path, settings: dict[str, Any]) -> None:
        self.ns, self.log = ns, workdir / "pxeserver.log"
        config = workdir / "pxeserver.yaml"
        config.write_text(yaml.safe_dump(settings))
        cmd = [sys.executable, "-m", "pxeserver", "serve", "--config", str(config),
               "--listen", SERVER, "--http-port", str(PORT), "--no-dhcp", "--no-tftp"]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = ns.popen(cmd, self.log, cwd=workdir)
        wait_for(self.up, 30, "pxeserver in the namespace")

    def up(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            return self.ns.call(answer, "/healthz", 2.0)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc, group=True)
        self.proc = None


@pytest.fixture
def boot_net() -> Iterator[Namespace]:
    """A namespace whose loopback holds the server's, the machine's and the slow
    client's addresses."""
    ns = Namespace(f"pxslow{os.getpid()}")
    ns.create()
    try:
        for address in (SERVER, MACHINE, SLOW):
            ns.ip("addr", "add", f"{address}/32", "dev", "lo")
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def enough_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = HELD + 1000
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.fail(f"the test holds {HELD} sockets: raise the hard open-files limit ({hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_boot_path_answers_while_one_address_holds_thousands_of_slow_connections(
    boot_net: Namespace, tmp_path: Path, enough_files: None
) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "big").write_bytes(b"\0" * (16 << 20))
    # The header timeout is long here so that every slow connection is surely held when
    # the machine asks: what is tested is that they are held and the answer still comes.
    settings = {"limits": {"http_header_timeout": 120}}
    server = NamespacedServer(boot_net, tmp_path, settings)
    slow: list[Any] = []
    try:
        for _ in range(20):  # the machine is known, and both workers have answered before
            assert boot_net.call(answer, f"/ipxe?mac={KNOWN}", 10.0)[0] == 200
            assert boot_net.call(answer, "/healthz", 10.0)[0] == 200
        heads = boot_net.call(open_from, SLOW, HELD - 100, HEAD, timeout=300)
        idle = boot_net.call(open_from, SLOW, 100, b"", timeout=60)
        # Beside them, requests that hold a worker's thread: bodies that never arrive,
        # and a 16 MiB file nobody reads.
        body = (f"POST /api/v1/nodes/{KNOWN}/ready HTTP/1.1\r\nHost: {SERVER}:{PORT}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n"
                "\r\ntoken=").encode()  # fmt: skip
        bodies = boot_net.call(open_from, SLOW, 40, body)
        unread = f"GET /assets/big HTTP/1.1\r\nHost: {SERVER}:{PORT}\r\n\r\n".encode()
        readers = boot_net.call(open_from, SLOW, 40, unread, 4096)
        slow = heads + idle + bodies + readers

        status, script = boot_net.call(answer, f"/ipxe?mac={KNOWN}", 1.0)
        assert status == 200 and script.startswith(b"#!ipxe"), script[:200]
        status, health = boot_net.call(answer, "/healthz", 1.0)
        assert status == 200 and b'"ok"' in health, health

        # ... while they were held: every slow connection is still open now.
        still = sum(held(s) for s in heads + idle)
        assert still == HELD, f"only {still} of {HELD} slow connections were held"

        # The slow client got at most its share of the workers' threads; its other
        # requests were turned away at once with 503 and Retry-After.
        def turned_away() -> bool:
            firsts = [_first_line(s) for s in bodies]
            return firsts.count(b"HTTP/1.1 503 Service Unavailable") >= 40 - 2 * 4

        wait_for(turned_away, 30, "503 for the slow bodies past the slow client's share")
    finally:
        for s in slow:
            s.close()
        try:
            # Its slots came back as its answers ended: the slow client is served again, by
            # both workers. Each worker lets go of its slots in its own time (a worker notices
            # a closed reader when it next writes), so the wait is for ten answers in a row:
            # connections land on a worker by their port, and ten all on one worker is rare.
            if server.proc is not None:
                wait_for(lambda: all(boot_net.call(_answer_from_slow) == 200 for _ in range(10)),
                         30, "the slow client served again")  # fmt: skip
                # ... and each answer gives its slot back: more requests than both
                # workers' shares together, one after the other, all answered.
                assert [boot_net.call(_answer_from_slow) for _ in range(20)] == [200] * 20
        finally:
            server.stop()
    assert "Traceback" not in server.log.read_text()


def _first_line(s: socket.socket) -> bytes:
    """The first line of what the server sent on ``s`` so far (b"" if nothing yet)."""
    timeout = s.gettimeout()
    s.settimeout(0)
    try:
        return s.recv(4096, socket.MSG_PEEK).partition(b"\r\n")[0]
    except OSError:
        return b""
    finally:
        s.settimeout(timeout)


def _answer_from_slow() -> int:
    with socket.create_connection((SERVER, PORT), timeout=5, source_address=(SLOW, 0)) as s:
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {SERVER}:{PORT}\r\nConnection: close\r\n\r\n"
                  .encode())  # fmt: skip
        return int(s.recv(100).split()[1])


def test_a_connection_that_sends_no_whole_request_head_is_closed(tmp_path: Path) -> None:
    settings = {"limits": {"http_header_timeout": 2}}
    server = ServerProcess(tmp_path, settings=settings, args=["--no-dhcp", "--no-tftp"]).start()
    socks: list[socket.socket] = []
    try:
        for n in range(20):
            s = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
            if n % 2:  # half send part of a head, byte by byte; half send nothing at all
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        assert all(held(s) for s in socks)  # the control: open at first

        def closed() -> bool:
            for s in socks[1::2]:
                if held(s):
                    s.sendall(b"X")  # a byte now and then does not keep it open
            return not any(held(s) for s in socks)

        wait_for(closed, 60, "the server to close connections that never sent a request", 0.5)
    finally:
        for s in socks:
            s.close()
        server.stop()


def documented_table() -> str:
    """The nftables table of docs/SECURITY.md ("Per-address connection caps")."""
    text = (REPO / "docs" / "SECURITY.md").read_text()
    return text.split("```nft\n", 1)[1].split("```", 1)[0]


def test_the_documented_kernel_cap_holds_one_address_to_its_connections(
    boot_net: Namespace, tmp_path: Path
) -> None:
    table = documented_table()
    assert f"tcp dport {PORT} " in table and "ct count over 64" in table
    subprocess.run(boot_net.command(["nft", "-f", "-"]), input=table.encode(), check=True,
                   capture_output=True, timeout=30)  # fmt: skip
    server = NamespacedServer(boot_net, tmp_path, {})
    socks: list[socket.socket] = []
    try:

        def connect_many() -> tuple[list[socket.socket], int]:
            opened, refused = [], 0
            for _ in range(100):
                try:
                    opened.append(open_from(SLOW, 1, HEAD)[0])
                except OSError:
                    refused += 1
            return opened, refused

        socks, refused = boot_net.call(connect_many)
        assert (len(socks), refused) == (64, 36)
        status, _ = boot_net.call(answer, f"/ipxe?mac={KNOWN}", 5.0)
        assert status == 200  # another address is not held back
    finally:
        for s in socks:
            s.close()
        server.stop()
