"""``pxeserver serve`` ends on SIGTERM even when a client stopped reading mid-download.

Found in the lab: a machine that loses power while it fetches its kernel leaves its
HTTP connection open for good, and granian waited on that worker forever.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from pxeserver.web.server import WORKERS_KILL_TIMEOUT_S

from ..support.server import ServerProcess


@pytest.mark.slow
def test_sigterm_ends_the_server_despite_a_stalled_download(tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    with open(assets / "kernel", "wb") as f:
        f.truncate(32 * 1024 * 1024)  # larger than every socket buffer on the way
    settings = {
        "server": {"listen": "127.0.0.1", "dhcp": False, "tftp": False},
        "paths": {"assets_dir": str(assets), "data_dir": str(tmp_path / "var")},
    }
    server = ServerProcess(tmp_path, settings=settings).start()
    assert server.proc is not None
    try:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
            s.sendall(b"GET /assets/kernel HTTP/1.1\r\nHost: pxe\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")  # then never read again
            time.sleep(0.5)
            os.kill(server.proc.pid, signal.SIGTERM)
            # It exits: the worker that waits on the stalled client is killed after
            # WORKERS_KILL_TIMEOUT_S (the wait's own limit only stops a hung test).
            code = server.proc.wait(timeout=WORKERS_KILL_TIMEOUT_S + 60)
    finally:
        server.kill()
    assert server.log().count("pxeserver stopped") == 1, server.log()
    assert code == 0, server.log()
