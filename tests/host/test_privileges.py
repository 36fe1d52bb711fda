"""``pxeserver serve --user nobody`` as root: the privileged ports (67, 69, 4011, 80) are
bound as root, then every process of the server runs without root.

The server runs inside a network namespace the test creates (192.0.2.1 on a veth
interface), so its ports are its own. The test reads ``/proc/<pid>/task/<tid>/status`` of
every thread of the main process, each HTTP worker, each TFTP transfer process and
multiprocessing's resource tracker: uid, gid, supplementary groups, capabilities and
no_new_privs. With HTTP on port 80 the one capability kept is CAP_NET_BIND_SERVICE
(granian's workers bind the HTTP port themselves, after the drop: see
pxeserver/host/privileges.py); with HTTP on 8080, none.

The dropped user must be able to run the interpreter. Where this one lives under a
folder closed to that user (pyenv under /root), the test runs the server with Debian's
interpreter of the same version and this virtualenv's packages on PYTHONPATH, and it
checks first that ``serve`` itself refuses the unreadable interpreter with a clear error.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pxeserver.commands.ipxe import copy_ipxe
from pxeserver.dhcp import packets as dp
from pxeserver.udp import tftp_workers

from ..support.dhcp import golden
from ..support.net import wait_for
from ..support.processes import children, command, started
from ..support.settings import REPO

USER = "nobody"
ADDRESS = "192.0.2.1"

DHCP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.settimeout(5)
s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))
print(s.recv(4096).hex())
"""


def as_user(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    entry = pwd.getpwnam(USER)
    return subprocess.run(
        cmd, user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], env=env, cwd="/",
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def python_for_user() -> tuple[str, dict[str, str]]:
    """An interpreter that USER can run with pxeserver importable, and its environment."""
    probe = ["-c", "import granian, flask, yaml, pxeserver.daemon"]
    env = dict(os.environ)
    try:
        if as_user([sys.executable, *probe], env).returncode == 0:
            return sys.executable, env
    except PermissionError:
        pass
    same = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not Path(same).exists():
        pytest.skip(f"user {USER} cannot run {sys.executable} and {same} does not exist")
    paths = [str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    out = as_user([same, *probe], env)
    if out.returncode == 0:
        return same, env
    # The checkout or its .venv is where USER cannot read (a clone under /root, say): give
    # USER a copy of pxeserver and the venv's packages, removed when the tests end.
    copy = Path(tempfile.mkdtemp(prefix="pxeserver-privileges-pkgs-"))
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    for src in dict.fromkeys(paths[1:]):
        shutil.copytree(src, copy, dirs_exist_ok=True, symlinks=True)
    shutil.copytree(REPO / "pxeserver", copy / "pxeserver", dirs_exist_ok=True)
    os.chmod(copy, 0o755)
    env["PYTHONPATH"] = str(copy)
    out = as_user([same, *probe], env)
    if out.returncode == 0:
        return same, env
    pytest.skip(
        f"user {USER} can run neither {sys.executable} nor {same} with pxeserver's packages, "
        f"not even from a copy in {copy} ({out.stderr.strip().splitlines()[-1:]})"
    )


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("binding ports below 1024 and dropping to another user need root")
    name = f"pxpriv-{secrets.token_hex(3)}"
    try:
        ip("netns", "add", name)
        ip("-n", name, "link", "set", "lo", "up")
        # a veth pair with both ends inside (this kernel has no dummy interfaces)
        ip("-n", name, "link", "add", "pxa0", "type", "veth", "peer", "name", "pxb0")
        ip("-n", name, "addr", "add", f"{ADDRESS}/24", "dev", "pxa0")
        ip("-n", name, "link", "set", "pxa0", "up")
        ip("-n", name, "link", "set", "pxb0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: /tmp/pytest-of-root is closed to other users.
    path = Path(tempfile.mkdtemp(prefix="pxeserver-privileges-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False, timeout=60)


def status_of_thread(pid: int, tid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def in_ns(ns: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def test_serve_refuses_a_user_that_cannot_run_it(world_readable_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    closed = world_readable_dir / "closed"
    closed.mkdir(mode=0o700)
    exe, env = python_for_user()
    out = subprocess.run(
        [exe, "-m", "pxeserver", "serve", "--listen", "127.0.0.1", "--no-dhcp", "--tftp-port",
         "0", "--http-port", "0", "--user", USER, "--data-dir", str(closed / "var")],
        cwd=world_readable_dir, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert (
        f"--user {USER}: after dropping root it cannot reach the data dir {closed}/var: "
        f"{closed} is closed to it" in out.stderr
    ), out.stderr
    assert "Traceback" not in out.stderr and "Spawning worker" not in out.stderr
    if exe != sys.executable:  # this interpreter is closed to the user: said so, clearly
        out = subprocess.run(
            [sys.executable, "-m", "pxeserver", "serve", "--listen", "127.0.0.1", "--no-dhcp",
             "--tftp-port", "0", "--http-port", "0", "--user", USER],
            cwd=world_readable_dir, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 1
        assert f"--user {USER}: that user cannot run this Python ({sys.executable} → " in (
            out.stderr
        ), out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("http_port", [80, 8080])
def test_serve_on_privileged_ports_drops_root_in_every_process(
    netns: str, world_readable_dir: Path, http_port: int
) -> None:
    exe, env = python_for_user()
    work = world_readable_dir
    root = work / "tftproot"
    copy_ipxe(root)
    templates = shutil.copytree(REPO / "cloud-configs", work / "cloud-configs")
    settings = {
        "server": {"listen": ADDRESS, "http_workers": 2, "log_format": "json"},
        "paths": {
            "tftp_root": str(root),
            "data_dir": str(work / "var"),
            "templates_dir": str(templates),
        },
    }
    (work / "pxeserver.yaml").write_text(yaml.safe_dump(settings))
    log_path = work / "serve.log"
    cmd = [exe, "-m", "pxeserver", "serve", "--config", str(work / "pxeserver.yaml"),
           "--http-port", str(http_port), "--tftp-port", "69", "--dhcp-port", "67",
           "--pxe-port", "4011", "--user", USER]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *cmd], cwd=work, env=env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    pids: dict[int, str] = {}
    kids: dict[int, str] = {}
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited:\n{log_path.read_text()}")
            got = in_ns(
                netns, "curl", "-s", "-m", "2", f"http://{ADDRESS}:{http_port}/healthz", timeout=10
            )
            return '"ok"' in got.stdout

        wait_for(up, 90, f"pxeserver on port {http_port} in the namespace", interval=0.5)
        # every privileged port answers, after the drop
        size = (root / "undionly.kpxe").stat().st_size
        fetched = subprocess.run(
            ["ip", "netns", "exec", netns, "curl", "-s", "-m", "20", f"tftp://{ADDRESS}/undionly.kpxe"],
            capture_output=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert fetched == (root / "undionly.kpxe").read_bytes() and len(fetched) == size
        for port, packet, want in ((67, "bios-pxe-discover", dp.OFFER),
                                   (4011, "uefi-pxe-request-4011", dp.ACK)):  # fmt: skip
            said = in_ns(netns, sys.executable, "-c", DHCP_CLIENT, ADDRESS, str(port),
                         golden(packet).hex())  # fmt: skip
            assert said.returncode == 0, said.stderr
            reply = dp.parse(bytes.fromhex(said.stdout.strip()))
            assert reply.message_type == want, (port, reply)
        # the processes: the main one and all its children
        main = proc.pid
        assert "pxeserver serve" in command(main)
        kids = children(main)
        pids = {main: "main", **{pid: "child" for pid in kids}}
        log = log_path.read_text()
        http = {int(p) for p in re.findall(r"Spawning worker-\d+ with PID: (\d+)", log)}
        tracker = {p for p in pids if "resource_tracker" in command(p)}
        tftp = set(pids) - http - tracker - {main}
        assert len(http) == 2 and http <= set(pids), (http, pids, log)
        # One transfer process while idle; more start on demand (pxeserver/tftp/server.py).
        assert len(tracker) == 1 and 1 <= len(tftp) <= tftp_workers(), {p: command(p) for p in pids}
        for pid in http:
            pids[pid] = "HTTP worker"
        for pid in tftp:
            pids[pid] = "TFTP transfer process"
        for pid in tracker:
            pids[pid] = "resource tracker"
        nobody = pwd.getpwnam(USER)
        kept = 1 << 10 if http_port < 1024 else 0  # CAP_NET_BIND_SERVICE, for port 80 only
        threads = [(pid, int(t.name), role) for pid, role in pids.items()
                   for t in Path(f"/proc/{pid}/task").iterdir()]  # fmt: skip
        assert len(threads) > len(pids)  # the services' threads are checked too
        print(f"HTTP on {http_port}: {len(pids)} processes, {len(threads)} threads checked")
        for pid, tid, role in threads:
            s = status_of_thread(pid, tid)
            assert s["Uid"].split() == [str(nobody.pw_uid)] * 4, (role, s["Uid"])
            assert s["Gid"].split() == [str(nobody.pw_gid)] * 4, (role, s["Gid"])
            assert s["Groups"] == "", (role, s["Groups"])
            for cap in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
                assert int(s[cap], 16) == kept, (role, cap, s[cap])
            assert s["NoNewPrivs"] == "1", (role, s["NoNewPrivs"])
        # the transfer processes run (none fell back to a thread in the main process)
        lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
        assert not [x for x in lines if "keep exiting at start" in x["message"]]
        dropped = [x for x in lines if x["message"].startswith("dropped privileges")]
        assert dropped and dropped[0]["pid"] == main
        # the data dir was handed over: the dropped server writes its store there
        assert (work / "var" / "pxeserver.db").stat().st_uid == nobody.pw_uid
        assert in_ns(netns, "curl", "-s", "-m", "5", f"http://{ADDRESS}:{http_port}/ipxe?mac=52:54:00:00:00:07"
                     ).stdout.startswith("#!ipxe")  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid, start in kids.items():  # anything of ours left over (a failed test)
            if started(pid) == start:
                os.kill(pid, signal.SIGKILL)
