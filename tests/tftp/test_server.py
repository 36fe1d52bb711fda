"""The TFTP service against real clients (curl, tftp-hpa, atftp) and raw hostile packets."""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeserver.boot import BootService
from pxeserver.model import MAC, Machine
from pxeserver.tftp import packets as tp
from pxeserver.tftp.pool import Worker
from pxeserver.tftp.server import TftpServer
from pxeserver.tftp.transfers import TransferLoop

from ..support.net import wait_for
from ..support.tftp import RawClient, curl, need

TFTP_HPA = shutil.which("tftp") or "tftp"
ATFTP = shutil.which("atftp") or "atftp"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "tftproot"
    r.mkdir(exist_ok=True)
    (r / "small.bin").write_bytes(os.urandom(100_000))
    (r / "medium.bin").write_bytes(os.urandom(3_000_000))
    (r / "exact.bin").write_bytes(os.urandom(512 * 8))  # ends with an empty block
    (r / "empty.bin").write_bytes(b"")
    (r / "sub").mkdir()
    (r / "sub" / "inner.txt").write_bytes(b"inner\n")
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"not for clients\n")
    (r / "escape").symlink_to(outside)
    (r / "inside").symlink_to(r / "small.bin")
    assets = tmp_path / "assets" / "coreos"
    assets.mkdir(parents=True)
    (assets / "vmlinuz").write_bytes(os.urandom(200_000))
    return r


@pytest.fixture
def server(root: Path, service: BootService, tmp_path: Path) -> Iterator[TftpServer]:
    service.start_background()
    s = TftpServer(root, address="127.0.0.1", port=0, assets_dir=tmp_path / "assets",
                   boot=service, base_url=lambda host: f"http://{host}:8080",
                   timeout=1.0, retries=3).start()  # fmt: skip
    yield s
    s.stop()
    service.stop_background()


# Load tests run many clients from one address (127.0.0.1); a real site has one address per
# machine, so the per-client limits (tests/tftp/test_hostile.py) are raised for them.
SHARED_ADDRESS = {"max_per_client": 64, "client_rate": 1000.0}


@pytest.mark.parametrize("blksize", [512, 1468, 8192])
@pytest.mark.parametrize("name", ["small.bin", "medium.bin", "exact.bin"])
def test_curl_byte_for_byte(server: TftpServer, root: Path, name: str, blksize: int) -> None:
    out = curl(server.port, name, "--tftp-blksize", str(blksize))
    assert out.returncode == 0, out.stderr
    assert out.stdout == (root / name).read_bytes()


def test_curl_without_options_and_subfolders(server: TftpServer, root: Path) -> None:
    out = curl(server.port, "sub/inner.txt", "--tftp-no-options")
    assert out.returncode == 0 and out.stdout == b"inner\n"
    assert curl(server.port, "inside").stdout == (root / "small.bin").read_bytes()


def test_assets_folder_is_the_assets_dir(server: TftpServer, tmp_path: Path) -> None:
    out = curl(server.port, "assets/coreos/vmlinuz", "--tftp-blksize", "1468")
    assert out.stdout == (tmp_path / "assets" / "coreos" / "vmlinuz").read_bytes()


@pytest.mark.parametrize("name", ["medium.bin", "empty.bin"])
def test_tftp_hpa_get(server: TftpServer, root: Path, tmp_path: Path, name: str) -> None:
    # (curl refuses an OACK with tsize 0, from any server: empty files are tested here)
    need(TFTP_HPA)
    target = tmp_path / "got.bin"
    out = subprocess.run([TFTP_HPA, "127.0.0.1", str(server.port), "-m", "binary", "-c", "get",
                          name, str(target)], capture_output=True, timeout=60,
                         check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert target.read_bytes() == (root / name).read_bytes()


@pytest.mark.parametrize(
    "options",
    [["blksize 1468", "tsize 0"], ["windowsize 4", "blksize 1468", "tsize 0"], ["BLKSIZE 8192"]],
)
def test_atftp_with_options(
    server: TftpServer, root: Path, tmp_path: Path, options: list[str]
) -> None:
    need(ATFTP)
    target = tmp_path / "got.bin"
    cmd = [ATFTP]
    for o in options:
        cmd += ["--option", o]
    cmd += ["-g", "-r", "medium.bin", "-l", str(target), "127.0.0.1", str(server.port)]
    out = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert target.read_bytes() == (root / "medium.bin").read_bytes()


def test_write_request_is_refused_and_nothing_written(
    server: TftpServer, root: Path, tmp_path: Path
) -> None:
    need(TFTP_HPA)
    local = tmp_path / "upload.bin"
    local.write_bytes(b"payload")
    out = subprocess.run([TFTP_HPA, "127.0.0.1", str(server.port), "-m", "binary", "-c", "put",
                          str(local), "uploaded.bin"], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert "Error code 2" in out.stdout + out.stderr and "read-only" in out.stdout + out.stderr
    assert not (root / "uploaded.bin").exists()
    assert sorted(p.name for p in root.iterdir()) == [
        "empty.bin",
        "escape",
        "exact.bin",
        "inside",
        "medium.bin",
        "small.bin",
        "sub",
    ]


@pytest.fixture
def raw(server: TftpServer) -> Iterator[RawClient]:
    c = RawClient(server.port)
    yield c
    c.close()


@pytest.mark.parametrize(
    ("name", "code"),
    [("../secret.txt", tp.ACCESS_VIOLATION), ("/etc/passwd", tp.ACCESS_VIOLATION),
     ("escape", tp.ACCESS_VIOLATION), ("sub/../../secret.txt", tp.ACCESS_VIOLATION),
     ("a" * 300, tp.ACCESS_VIOLATION), ("nul\x00.bin", tp.ILLEGAL_OPERATION),
     ("missing.bin", tp.FILE_NOT_FOUND), ("sub", tp.FILE_NOT_FOUND)],
)  # fmt: skip
def test_refusals_are_error_packets_logged_once(
    raw: RawClient, server: TftpServer, name: str, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pxeserver.tftp.server")
    packet = b"\x00\x01" + name.encode() + b"\x00octet\x00"
    for _ in range(3):  # a client that retries gets the same answer, the log one line
        raw.send(packet)
        answer = raw.recv()
        assert isinstance(answer, tp.Error) and answer.code == code
    lines = [
        r for r in caplog.records if r.name == "pxeserver.tftp.server" and "refused" in r.message
    ]
    assert len(lines) == 1, [r.message for r in lines]
    # a missing file is routine (PXELINUX probes names); anything else is a warning
    assert lines[0].levelno == (logging.INFO if code == tp.FILE_NOT_FOUND else logging.WARNING)
    assert b"not for clients" not in repr(answer).encode()


def test_no_options_means_no_oack(raw: RawClient) -> None:
    raw.send(tp.request("small.bin"))
    first = raw.recv()
    assert isinstance(first, tp.Data) and first.block == 1 and len(first.payload) == 512


@pytest.mark.parametrize(
    ("options", "answer"),
    [({"blksize": "abc"}, None), ({"BLKSIZE": "1024"}, {"blksize": "1024"}),
     ({"TSize": "0", "Multicast": ""}, {"tsize": "100000"}),
     ({"blksize": "65535"}, {"blksize": "65464"}), ({"timeout": "0"}, None)],
)  # fmt: skip
def test_odd_options_get_correct_answers(
    raw: RawClient, server: TftpServer, root: Path, options: dict[str, str],
    answer: dict[str, str] | None,
) -> None:  # fmt: skip
    raw.send(tp.request("small.bin", options))
    first = raw.recv()
    if answer is None:
        assert isinstance(first, tp.Data) and first.block == 1 and len(first.payload) == 512
    else:
        assert isinstance(first, tp.Request) and first.opcode == tp.OACK
        assert dict(first.options) == answer
    # and the server still serves everyone
    assert curl(server.port, "small.bin").stdout == (root / "small.bin").read_bytes()


def test_duplicate_acks_never_cause_a_resend(raw: RawClient, server: TftpServer) -> None:
    raw.send(tp.request("small.bin"))
    assert isinstance(raw.recv(), tp.Data)
    raw.send(tp.ack(1))
    second = raw.recv()
    assert isinstance(second, tp.Data) and second.block == 2
    for _ in range(5):
        raw.send(tp.ack(1))  # the Sorcerer's Apprentice trigger
    raw.send(tp.ack(7))  # an ACK for a block never sent: ignored too
    # Block 2 comes again once, from the retransmission timer (1 s) and not from the ACKs:
    # the server reads its packets in order, so a resend the ACKs caused would come
    # before block 3, which our ACK of block 2 (sent after the first copy) asks for.
    again = raw.recv(10)
    assert isinstance(again, tp.Data) and again.block == 2  # the timer's one resend
    raw.send(tp.ack(2))
    third = raw.recv()
    assert isinstance(third, tp.Data) and third.block == 3, third


@pytest.mark.parametrize(("answered", "resends"), [(False, 2), (True, 3)])
def test_a_silent_client_is_dropped_after_its_retries(
    raw: RawClient, server: TftpServer, answered: bool, resends: int
) -> None:
    # retries=3 for a client that answered once; one that never answered (maybe a forged
    # source address) gets UNANSWERED_RETRIES=2 resends of the first packet
    raw.send(tp.request("small.bin", {"timeout": "1"}))
    oack = raw.recv()
    assert isinstance(oack, tp.Request) and oack.opcode == tp.OACK
    if answered:
        raw.send(tp.ack(0))
        first = raw.recv()
        assert isinstance(first, tp.Data) and first.block == 1
    repeats = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and raw.recv(5) is not None:
        repeats += 1
    assert repeats == resends
    deadline = time.monotonic() + 20
    while server.active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.active == 0 and server.counters["failed"] == 1


def test_block_numbers_roll_over(server: TftpServer, root: Path) -> None:
    (root / "long.bin").write_bytes(os.urandom(8 * 65536 + 100))  # 65549 blocks of 8 bytes
    out = curl(server.port, "long.bin", "--tftp-blksize", "8")
    assert out.returncode == 0 and out.stdout == (root / "long.bin").read_bytes()


def test_fifty_transfers_at_once(root: Path, service: BootService) -> None:
    server = TftpServer(root, address="127.0.0.1", port=0, boot=service, **SHARED_ADDRESS)
    server.start()
    try:
        _fifty(server, root)
    finally:
        server.stop()


def _fifty(server: TftpServer, root: Path) -> None:
    expected = (root / "medium.bin").read_bytes()
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        outs = list(pool.map(lambda i: curl(server.port, "medium.bin", "--tftp-blksize",
                                            str((512, 1468, 8192)[i % 3])), range(50)))  # fmt: skip
    assert [o.returncode for o in outs] == [0] * 50
    assert all(o.stdout == expected for o in outs)
    # (the last ACK of each may be handled just after its client exits)
    wait_for(lambda: server.counters["completed"] == 50, 10, "50 completed transfers")


def test_worker_processes_serve_the_same(root: Path, service: BootService) -> None:
    s = TftpServer(root, address="127.0.0.1", port=0, boot=service, workers=2,
                   **SHARED_ADDRESS).start()  # fmt: skip
    try:
        expected = (root / "medium.bin").read_bytes()
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            outs = list(pool.map(lambda _: curl(s.port, "medium.bin", "--tftp-blksize",
                                                "1468"), range(8)))  # fmt: skip
        assert all(o.returncode == 0 and o.stdout == expected for o in outs)
        assert curl(s.port, "missing.bin").returncode != 0
        deadline = time.monotonic() + 5
        while s.counters["completed"] < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.counters["completed"] == 8 and s.active == 0
        # a transfer process that dies is replaced; clients are served again
        first = s.pool.loops[0]
        assert not isinstance(first, TransferLoop)
        os.kill(first.process.pid, signal.SIGKILL)
        wait_for(lambda: s.pool.loops[0] is not first, 10, "a new transfer process")
        outs = [curl(s.port, "small.bin") for _ in range(4)]
        assert all(o.stdout == (root / "small.bin").read_bytes() for o in outs)
    finally:
        s.stop()


def test_transfer_processes_start_when_busy_and_stop_when_idle(root: Path) -> None:
    """Each step waits for the event it is about, not for a time: a transfer held open
    makes the first process busy, so the next one starts a second; the second is retired
    once idle, and its exit is the one the pool reaps."""
    s = TftpServer(root, address="127.0.0.1", port=0, workers=2, idle_retire=0.5,
                   timeout=5.0).start()  # fmt: skip
    held = RawClient(s.port)
    try:
        first = s.pool.loops[0]
        assert isinstance(first, Worker) and s.pool.loops[1] is None  # one while idle
        held.send(tp.request("medium.bin"))  # its client never answers: the process is busy
        assert isinstance(held.recv(30), tp.Data)
        expected = (root / "small.bin").read_bytes()
        assert curl(s.port, "small.bin").stdout == expected
        second = s.pool.loops[1]
        assert isinstance(second, Worker), "a second process while the first is busy"
        held.send(tp.error(tp.NOT_DEFINED, "giving up"))  # the held transfer ends too
        wait_for(lambda: s.active == 0, 30, "both transfers to end")
        wait_for(lambda: s.pool.loops[1] is None, 30, "the idle second process to be retired")
        # The pool stops it in a thread of its own, which reaps its exit: joining it here
        # as well would race that thread for the exit status (and could see it "alive").
        wait_for(lambda: second.process.exitcode is not None, 60, "the retired one to exit")
        assert s.pool.loops[0] is first
        assert curl(s.port, "small.bin").stdout == expected
    finally:
        held.close()
        s.stop()


def test_chain_script_over_tftp(server: TftpServer, service: BootService) -> None:
    out = curl(server.port, "boot.ipxe")
    assert out.returncode == 0
    assert out.stdout.decode() == service.chain_script("http://127.0.0.1:8080")


def test_pxelinux_config_is_the_machines_own(server: TftpServer, service: BootService) -> None:
    out = curl(server.port, "pxelinux.cfg/01-52-54-00-12-34-56")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "KERNEL assets/coreos/vmlinuz" in text and "INITRD assets/coreos/initrd.cpio.gz" in text
    assert "cloud-config-url=http://127.0.0.1:8080/cloud-config?mac=52:54:00:12:34:56" in text
    node = service.registry.get(MAC.parse("52:54:00:12:34:56"))
    assert node is not None and node.state.value == "booting" and node.boot_count == 1
    assert curl(server.port, "pxelinux.cfg/01-52-54-00-12-34-zz").returncode != 0


def test_transfers_are_recorded_on_the_node_ProxyDHCP_saw(
    server: TftpServer, service: BootService, root: Path
) -> None:
    mac = MAC.parse("52:54:00:12:34:99")
    service.note_dhcp(Machine(mac, arch="i386", platform="pcbios", ip="127.0.0.1"), "seen")
    assert curl(server.port, "small.bin", "--tftp-blksize", "1468").returncode == 0

    def recorded() -> bool:
        found = service.registry.get(mac) if service.flush_background(1) else None
        return found is not None and len(found.events) == 2

    wait_for(recorded, 10, "the TFTP event on the node")
    node = service.registry.get(mac)
    assert node is not None
    assert [e.kind.value for e in node.events] == ["dhcp", "tftp"]
    assert node.events[1].detail.startswith("small.bin 100000 bytes in ")
    assert "blksize 1468" in node.events[1].detail


def test_windowsize_sends_a_window_and_restarts_after_a_gap(raw: RawClient) -> None:
    raw.send(tp.request("small.bin", {"windowsize": "4"}))
    oack = raw.recv()
    assert isinstance(oack, tp.Request) and dict(oack.options) == {"windowsize": "4"}
    raw.send(tp.ack(0))
    window = [raw.recv() for _ in range(4)]
    assert [p.block for p in window if isinstance(p, tp.Data)] == [1, 2, 3, 4]
    raw.send(tp.ack(2))  # the client lost block 3: it acknowledges what it has in order
    # No more than the window before an ACK: a block 5 sent without one would come
    # before the answer to this ACK, which starts at block 3.
    again = [raw.recv() for _ in range(4)]
    assert [p.block for p in again if isinstance(p, tp.Data)] == [3, 4, 5, 6]
    raw.send(tp.ack(6))
    nxt = raw.recv()
    assert isinstance(nxt, tp.Data) and nxt.block == 7


def test_transfer_processes_that_cannot_start_fall_back_to_a_thread(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a worker that dies at once, as one would whose interpreter the dropped user cannot read
    s = TftpServer(root, address="127.0.0.1", port=0, workers=1,
                   worker_init=functools.partial(os._exit, 3)).start()  # fmt: skip
    try:
        wait_for(lambda: isinstance(s.pool.loops[0], TransferLoop), 30, "the fallback to a thread")
        out = curl(s.port, "small.bin")
        assert out.returncode == 0 and out.stdout == (root / "small.bin").read_bytes()
        assert "serving transfers in a thread of the main process instead" in caplog.text
    finally:
        s.stop()
