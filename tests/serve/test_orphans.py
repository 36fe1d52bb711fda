"""``kill -9`` of ``pxeserver serve`` leaves no process behind.

Found here: the HTTP workers (granian) lived on as orphans holding the HTTP port, and
multiprocessing's resource tracker with them, so a restarted server could not bind.
The workers now ask the kernel for SIGKILL when their parent dies (pxeserver.host.children);
TFTP transfer processes end when their job pipe closes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pxeserver.commands.ipxe import copy_ipxe

from ..support.net import free_port, port_open, wait_for
from ..support.processes import children, command, started
from ..support.server import ServerProcess
from ..support.tftp import fetch


@pytest.mark.slow
def test_sigkill_of_the_main_process_leaves_no_child_behind(tmp_path: Path) -> None:
    root = tmp_path / "tftproot"
    copy_ipxe(root)
    tftp_port = free_port(socket.SOCK_DGRAM)
    settings = {
        "server": {"listen": "127.0.0.1", "dhcp": False, "http_workers": 2},
        "paths": {"tftp_root": str(root), "data_dir": str(tmp_path / "var")},
    }
    server = ServerProcess(tmp_path, settings=settings, args=["--tftp-port", str(tftp_port)])
    server.start()
    assert server.proc is not None
    main = server.proc.pid
    kids: dict[int, str] = {}
    try:
        # TFTP transfer processes are up and have served (the TFTP log line says so)
        assert fetch(tftp_port, "undionly.kpxe") == (root / "undionly.kpxe").read_bytes()
        kids = children(main)
        kinds = {pid: command(pid) for pid in kids}
        # 2 HTTP workers + TFTP transfer processes + multiprocessing's resource tracker
        assert len(kids) >= 4, kinds
        assert any("resource_tracker" in c for c in kinds.values()), kinds
        killed = time.monotonic()
        os.kill(main, signal.SIGKILL)  # the main process only, not its process group
        server.proc.wait(timeout=10)

        def all_gone() -> bool:
            return all(started(pid) != start for pid, start in kids.items())

        try:
            wait_for(all_gone, 15, "every child of the killed server to end")
        except TimeoutError:
            left = {p: command(p) for p, s in kids.items() if started(p) == s}
            raise AssertionError(f"children of the killed server still running: {left}") from None
        print(f"{len(kids)} children, all gone {time.monotonic() - killed:.2f} s after kill -9")
        assert not port_open(server.http_port), "something still holds the HTTP port"
        # the same ports serve again at once
        again = ServerProcess(tmp_path, settings=settings, args=["--tftp-port", str(tftp_port)])
        again.http_port = server.http_port
        again.start()
        again.stop()
    finally:
        server.kill()
        for pid, start in kids.items():  # only if the test failed: ours, by pid
            if started(pid) == start:
                os.kill(pid, signal.SIGKILL)


def test_a_worker_whose_parent_is_already_gone_exits() -> None:
    # The race prctl cannot cover: the parent died before the worker asked. The worker
    # checks its parent right after asking and goes.
    code = "from pxeserver.host.children import die_with_parent; die_with_parent(1); print('lived')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert out.returncode == 1 and "lived" not in out.stdout
    assert "the main process 1 is gone; exiting" in out.stderr
    code = (
        "import os; from pxeserver.host.children import die_with_parent; "
        "print(die_with_parent(os.getppid()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
