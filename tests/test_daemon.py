"""The daemon's main process without its HTTP server: Daemon.bind(), start(), stop() on
loopback, with the real UDP services, store, reaper and sightings writer, and no granian.

The whole ``pxeserver serve`` (granian's workers around this) is tested in tests/serve/.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from pxeserver.daemon import Daemon
from pxeserver.dhcp.proxy import ProxyDhcp
from pxeserver.errors import PxeError
from pxeserver.model import MAC, EventKind
from pxeserver.store.sqlite import SQLiteStore
from pxeserver.tftp.server import TftpServer

from .support.dhcp import exchange, golden
from .support.net import free_port, wait_for
from .support.settings import make_settings
from .support.tftp import fetch

BIOS_MAC = MAC.parse("52:54:00:00:00:01")  # the MAC of the golden bios-pxe-discover
SERVICE_THREADS = (
    "sightings",
    "reaper",
    "reaper-index",
    "tftp",
    "dhcp-dhcp",
    "dhcp-pxe",
    "replayer",
)


def udp_settings(tmp_path: Path, **server: int) -> object:
    root = tmp_path / "tftproot"
    root.mkdir(exist_ok=True)
    (root / "undionly.kpxe").write_bytes(b"loader" * 1000)
    ports = {"tftp_port": 0, "dhcp_port": 0, "pxe_port": 0, **server}
    return make_settings(tmp_path, {"server": {"listen": "127.0.0.1", **ports}})


def running() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in SERVICE_THREADS]


def can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_start_serves_tftp_and_proxydhcp_and_stop_leaves_nothing(tmp_path: Path) -> None:
    daemon = Daemon(udp_settings(tmp_path))  # type: ignore[arg-type]
    daemon.start()  # binds first: nobody called bind()
    try:
        assert daemon.udp is not None and daemon.service is not None
        tftp = next(s for s in daemon.udp.services if isinstance(s, TftpServer))
        dhcp = next(s for s in daemon.udp.services if isinstance(s, ProxyDhcp))
        assert fetch(tftp.port, "undionly.kpxe") == b"loader" * 1000
        reply = exchange(dhcp.ports["dhcp"], golden("bios-pxe-discover"))
        assert reply is not None and reply.file == b"undionly.kpxe"
        # The sighting goes to the registry through the background writer (queued after
        # the answer is sent).
        sightings = daemon.service.sightings
        wait_for(lambda: sightings.counters["written"] == 1, 10, "the sighting written")
        assert daemon.service.node(BIOS_MAC).events[0].kind is EventKind.DHCP
        assert sorted(set(running()) - {"replayer"}) == sorted(SERVICE_THREADS[:-1])
        ports = (tftp.port, dhcp.ports["dhcp"], dhcp.ports["pxe"])
    finally:
        daemon.stop()
    assert running() == [] and daemon.service is None and not daemon.running
    assert all(can_bind(p) for p in ports)
    # What was recorded is in the store, which the daemon closed and another may open.
    store = SQLiteStore(tmp_path / "var" / "pxeserver.db")
    try:
        found = store.get(BIOS_MAC)
        assert found is not None and found.node.events[0].kind is EventKind.DHCP
    finally:
        store.close()


def test_a_port_in_use_is_raised_by_start_and_nothing_stays_open(tmp_path: Path) -> None:
    tftp_port, dhcp_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    pxe_port = busy.getsockname()[1]
    settings = udp_settings(tmp_path, tftp_port=tftp_port, dhcp_port=dhcp_port, pxe_port=pxe_port)
    daemon = Daemon(settings)  # type: ignore[arg-type]
    try:
        taken = rf"cannot bind ProxyDHCP to 127\.0\.0\.1:{pxe_port}: port {pxe_port} is in use "
        with pytest.raises(PxeError, match=taken + r"by another program .*port with --pxe-port$"):
            daemon.start()
        # TFTP and ProxyDHCP's first port were bound before the failure: released again.
        assert can_bind(tftp_port) and can_bind(dhcp_port)
        assert running() == [] and daemon.service is None and not daemon.running
    finally:
        busy.close()
    # Positive control: with the port free, the same daemon starts.
    daemon.start()
    try:
        assert daemon.running and "reaper" in running()
    finally:
        daemon.stop()
    assert running() == []


def test_a_store_that_cannot_open_is_one_sentence_from_bind(tmp_path: Path) -> None:
    (tmp_path / "var" / "pxeserver.db").mkdir(parents=True)  # a folder where the file goes
    daemon = Daemon(udp_settings(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(PxeError, match=r"^cannot open the store: SQLite store .*pxeserver\.db"):
        daemon.bind()
    assert daemon.service is None and daemon.udp is None and running() == []


@pytest.mark.parametrize(
    ("server", "level", "words"),
    [
        ({}, "INFO", "from this machine (loopback) only"),
        ({"allow_unauthenticated_writes": True}, "WARNING", "anyone who reaches port 8080"),
        ({"api_token": "s3cret"}, "INFO", "need the API token"),
    ],
)
def test_the_start_says_who_may_change_nodes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, server: dict[str, object], level: str,
    words: str,
) -> None:  # fmt: skip
    settings = udp_settings(tmp_path, dhcp=False, tftp=False, **server)  # type: ignore[arg-type]
    daemon = Daemon(settings)  # type: ignore[arg-type]
    with caplog.at_level("INFO", logger="pxeserver"):
        daemon.start()
        daemon.stop()
    said = [r for r in caplog.records if r.name == "pxeserver.checks"]
    assert len(said) == 1 and said[0].levelname == level and words in said[0].getMessage(), [
        r.getMessage() for r in said
    ]


def test_the_main_process_learns_known_macs_from_the_heads(tmp_path: Path) -> None:
    daemon = Daemon(udp_settings(tmp_path, dhcp=False, tftp=False))  # type: ignore[arg-type]
    daemon.bind()
    try:
        assert daemon.service is not None and daemon.service.sightings.feed is not None
    finally:
        daemon.stop()
