"""ProxyDHCP on a real (virtual) network: a client with no address broadcasts from 0.0.0.0:68
and gets the broadcast answer on port 68, through a veth pair between two namespaces that
the test creates (192.0.2.0/24, names with a random suffix) and always deletes."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeserver.dhcp import packets as dp

from ..support.dhcp import golden
from ..support.net import wait_for
from ..support.settings import REPO

SERVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pxeserver.dhcp.proxy import ProxyDhcp
    from pxeserver.host.netif import interface_address

    class Boot:  # the boot policy's answers; the real one is tested on loopback
        def boot_refusal(self, machine): return None
        def note_dhcp(self, machine, detail): print("noted", machine.mac, detail, flush=True)

    dev = sys.argv[1]
    p = ProxyDhcp(Boot(), address=interface_address(dev), interface=dev,
                  tftp_root=Path(sys.argv[2])).start()
    print("ready", flush=True)
    time.sleep(60)
""")

CLIENT = textwrap.dedent("""
    import socket, sys
    dev, hexdata = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
    s.bind(("0.0.0.0", 68))
    s.settimeout(5)
    s.sendto(bytes.fromhex(hexdata), ("255.255.255.255", 67))
    data, source = s.recvfrom(4096)
    print(source[0], data.hex())
""")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def network() -> Iterator[tuple[str, str, str, str]]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = secrets.token_hex(3)
    server_ns, client_ns = f"pxs-{tag}", f"pxc-{tag}"
    server_dev, client_dev = f"pxs{tag}", f"pxc{tag}"
    try:
        ip("netns", "add", server_ns)
        ip("netns", "add", client_ns)
        ip("link", "add", server_dev, "type", "veth", "peer", "name", client_dev)
        ip("link", "set", server_dev, "netns", server_ns)
        ip("link", "set", client_dev, "netns", client_ns)
        ip("-n", server_ns, "addr", "add", "192.0.2.1/24", "dev", server_dev)
        for ns, dev in ((server_ns, server_dev), (client_ns, client_dev)):
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield server_ns, client_ns, server_dev, client_dev
    finally:
        for ns in (server_ns, client_ns):  # deleting a namespace deletes its veth end
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def test_firmware_without_an_address_gets_a_broadcast_answer(
    network: tuple[str, str, str, str], tmp_path: Path
) -> None:
    server_ns, client_ns, server_dev, client_dev = network
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, sys.executable, "-c", SERVER, server_dev,
             str(tmp_path)], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    try:
        wait_for(lambda: b"ready" in log.read_bytes() or server.poll() is not None, 30, "server")
        assert server.poll() is None, log.read_text()
        out = subprocess.run(
            ["ip", "netns", "exec", client_ns, sys.executable, "-c", CLIENT, client_dev,
             golden("uefi-pxe-discover").hex()],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr + log.read_text()
        source, data = out.stdout.split()
        reply = dp.parse(bytes.fromhex(data))
        assert source == "192.0.2.1"
        assert reply.message_type == dp.OFFER and reply.yiaddr == "0.0.0.0"
        assert reply.file == b"snponly.efi" and reply.siaddr == "192.0.2.1"
        assert reply.options[dp.OPT_SERVER_ID] == bytes([192, 0, 2, 1])
        wait_for(lambda: b"noted 52:54:00:00:00:03" in log.read_bytes(), 5, "the sighting")
    finally:
        server.kill()  # by its PID (ip netns exec execs the interpreter in place)
        server.wait(timeout=10)
