"""``pxeserver serve`` with TFTP and ProxyDHCP: what the README promises, and privileges."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

# Imported here, as root: after dropping to nobody the child may not read an interpreter
# installed under /root (pyenv), so everything the check uses must be loaded already.
import pxeserver.dhcp.proxy
import pxeserver.tftp.server  # noqa: F401
from pxeserver.commands.ipxe import copy_ipxe
from pxeserver.config import parse
from pxeserver.daemon import make_service
from pxeserver.dhcp import packets as dp
from pxeserver.errors import PxeError
from pxeserver.host.privileges import drop_privileges
from pxeserver.model import MAC
from pxeserver.store.sqlite import SQLiteStore
from pxeserver.udp import UdpServices

from ..support.dhcp import exchange, golden
from ..support.net import free_port, wait_for
from ..support.server import ServerProcess
from ..support.tftp import fetch


@pytest.fixture
def served(tmp_path: Path) -> Any:
    root = tmp_path / "tftproot"
    copy_ipxe(root)
    tftp_port, dhcp_port, pxe_port = (free_port(socket.SOCK_DGRAM) for _ in range(3))
    s = ServerProcess(tmp_path, settings={"paths": {"tftp_root": str(root)}}, args=[
        "--listen", "127.0.0.1", "--tftp-port", str(tftp_port), "--dhcp-port", str(dhcp_port),
        "--pxe-port", str(pxe_port)])  # fmt: skip
    s.start()
    yield s, root, tftp_port, dhcp_port, pxe_port
    s.stop()


def sighted(s: ServerProcess, port: int, packet: bytes, mac: MAC) -> dp.DhcpPacket | None:
    """Send ``packet`` to ProxyDHCP and wait until the server recorded the sighting; an
    answer, if ProxyDHCP sent one, is waiting by then (it answers before it hands over
    what it saw). None: it sent nothing, a fact rather than a timeout."""
    before = s.get(f"/api/v1/nodes/{mac}")[2]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.sendto(packet, ("127.0.0.1", port))
        wait_for(lambda: s.get(f"/api/v1/nodes/{mac}")[2] != before, 20, f"{mac}'s sighting")
        client.setblocking(False)
        try:
            return dp.parse(client.recv(4096))
        except BlockingIOError:
            return None


def test_the_readme_promise_and_a_boot_recorded(served: Any) -> None:
    s, root, tftp_port, dhcp_port, pxe_port = served
    # Done-when: curl -s tftp://127.0.0.1:PORT/undionly.kpxe | cmp - tftproot/undionly.kpxe
    assert fetch(tftp_port, "undionly.kpxe") == (root / "undionly.kpxe").read_bytes()
    # A BIOS PXE ROM asks; the answer names the loader over TFTP, with no address
    mac = MAC.parse("52:54:00:00:00:01")  # (the golden packets' MAC)
    reply = sighted(s, dhcp_port, golden("bios-pxe-discover"), mac)
    assert reply is not None and reply.file == b"undionly.kpxe" and reply.yiaddr == "0.0.0.0"
    reply = exchange(pxe_port, golden("uefi-pxe-request-4011"))
    assert reply is not None and reply.message_type == dp.ACK and reply.file == b"snponly.efi"
    # it takes 127.0.0.1 from the site's DHCP server (seen, not answered: the same
    # exchange saw the answer to the DISCOVER), then fetches its loader
    options = dict(dp.parse(golden("bios-pxe-discover")).options)
    options.update({53: b"\x03", 50: socket.inet_aton("127.0.0.1"), 54: bytes([192, 0, 2, 1])})
    assert sighted(s, dhcp_port, dp.request_packet(mac, options), mac) is None
    assert fetch(tftp_port, "undionly.kpxe") == (root / "undionly.kpxe").read_bytes()

    def recorded() -> bool:
        status, _, _ = s.get(f"/api/v1/nodes/{mac}")
        if status != 200:
            return False
        kinds = [e["kind"] for e in s.json(f"/api/v1/nodes/{mac}")["events"]]
        return "tftp" in kinds

    wait_for(recorded, 10, "the TFTP event on the node")
    node = s.json(f"/api/v1/nodes/{mac}")
    assert node["state"] == "discovered" and node["ip"] == "127.0.0.1"
    assert node["platform"] == "pcbios" and node["arch"] == "i386"
    assert "undionly.kpxe 74" in node["events"][-1]["detail"] or "undionly.kpxe" in str(node)
    # UEFI HTTP boot fetches ipxe.efi over HTTP from the URL ProxyDHCP gave it
    status, _, body = s.get("/boot/ipxe.efi")
    assert status == 200 and body == (root / "ipxe.efi").read_bytes()
    assert s.get("/boot/../pxeserver.yaml")[0] == 404
    assert "52:54:00:00:00:01 ProxyDHCP DISCOVER on port 67: BIOS (arch 0)" in s.log()
    # and the metrics the operators scrape count them
    status, _, body = s.get("/metrics")
    text = body.decode()
    assert status == 200
    assert 'pxeserver_tftp_transfers_total{result="ok"} 2.0' in text, text
    size = (root / "undionly.kpxe").stat().st_size
    assert f"pxeserver_tftp_bytes_total {2 * size}.0" in text  # two undionly.kpxe
    assert 'pxeserver_dhcp_offers_total{port="67"} 1.0' in text
    assert 'pxeserver_dhcp_offers_total{port="4011"} 1.0' in text


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "pxeserver", "serve", "--listen", "127.0.0.1", "--no-dhcp",
             "--tftp-port", str(port), "--http-port", str(free_port())],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert out.returncode == 1
    assert f"cannot bind TFTP to 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


def in_child_as_nobody(check: Any) -> None:
    """Run ``check`` in a forked child that has dropped root; fail with what it printed."""
    if os.getuid() != 0:
        pytest.skip("dropping privileges needs root")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so the interpreter's location does not matter
        os.close(r)
        try:
            check()
            os.write(w, b"ok")
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            os.write(w, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()
    os.waitpid(pid, 0)
    assert said == "ok", said


def test_privileged_ports_then_dropping_root() -> None:
    # Not pytest's tmp_path: its parent is private to root, and nobody must reach the files.
    tmp_path = Path(tempfile.mkdtemp(prefix="pxeserver-privileges-"))

    def check() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        data = tmp_path / "var"
        (data / "metrics").mkdir(parents=True)
        (data / "metrics" / "counter_1.db").write_bytes(b"")
        (data / "pxeserver.db").write_bytes(b"")
        drop_privileges("nobody", [data])
        nobody = pwd.getpwnam("nobody")
        assert (os.getuid(), os.getgid(), os.getgroups()) == (nobody.pw_uid, nobody.pw_gid, [])
        for path in (
            data,
            data / "pxeserver.db",
            data / "metrics",
            data / "metrics" / "counter_1.db",
        ):
            assert path.stat().st_uid == nobody.pw_uid, path
        sock.sendto(b"still bound", sock.getsockname())  # sockets bound as root keep working
        assert sock.recv(100) == b"still bound"
        # a non-root user asking for port 69 gets the sentence that says what to do
        settings, _ = parse({"server": {"listen": "127.0.0.1", "tftp_port": 69, "dhcp": False},
                             "paths": {"tftp_root": str(tmp_path)}}, "t.yaml", None)  # fmt: skip
        udp = UdpServices(settings, make_service(settings, SQLiteStore(tmp_path / "n.db")))
        try:
            udp.bind()
        except PxeError as exc:
            text = str(exc)
            assert "cannot bind TFTP to 127.0.0.1:69: port 69 needs root" in text, text
            assert "--tftp-port 6969 --no-dhcp" in text, text
        else:
            raise AssertionError("port 69 was bound without root")

    tmp_path.chmod(0o777)
    try:
        in_child_as_nobody(check)
    finally:
        shutil.rmtree(tmp_path)


def test_an_unknown_user_is_a_clear_error() -> None:
    with pytest.raises(PxeError, match="no user 'no-such-user-x'"):
        drop_privileges("no-such-user-x", [])


def test_an_unknown_user_stops_serve_before_anything_is_bound(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pxeserver", "serve", "--listen", "127.0.0.1", "--no-dhcp",
         "--tftp-port", "0", "--http-port", str(free_port()), "--user", "no-such-user-x"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert "no user 'no-such-user-x' to drop privileges to; create it or fix --user" in out.stderr
    assert "Listening at" not in out.stderr  # HTTP never started
