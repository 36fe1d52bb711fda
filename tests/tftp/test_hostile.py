"""Hostile TFTP against the real UDP service: malformed packets, floods, stalled and spoofed
clients. After each, a real client (curl) still fetches its file. The limits measured here
are the ones docs/RELIABILITY.md quotes."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeserver.tftp import packets as tp
from pxeserver.tftp.server import TftpServer

from ..support.net import wait_for
from ..support.tftp import CURL, RawClient, curl, need

MIB = bytes(range(256)) * 4096


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    r = base / "tftproot"
    (r / "sub").mkdir(parents=True)
    (r / "small.bin").write_bytes(bytes(range(256)) * 390 + b"tail")  # 196 blocks of 512
    (r / "mib.bin").write_bytes(MIB)
    (base / "secret.txt").write_bytes(b"not for clients\n")
    (r / "escape").symlink_to(base / "secret.txt")
    return r


@pytest.fixture(scope="module")
def shared() -> Iterator[dict[str, TftpServer]]:
    holder: dict[str, TftpServer] = {}
    yield holder
    if "server" in holder:
        holder["server"].stop()


@pytest.fixture
def server(root: Path, shared: dict[str, TftpServer]) -> TftpServer:
    """One server for the whole module's packets: each lands on what the ones before it left
    behind, and a real client must still be served after each. (Its per-address request
    rate is raised: every test here sends from 127.0.0.1; the flood test has the default.)"""
    if "server" not in shared:
        shared["server"] = TftpServer(root, address="127.0.0.1", port=0, timeout=1.0,
                                      retries=3, client_rate=1000).start()  # fmt: skip
    return shared["server"]


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.lstat().st_size) for p in root.rglob("*"))


def still_serves(server: TftpServer, root: Path) -> None:
    out = curl(server.port, "small.bin", "--tftp-blksize", "1468")
    assert out.returncode == 0 and out.stdout == (root / "small.bin").read_bytes()


def from_address(address: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((address, 0))
    s.settimeout(2)
    return s


# (packet, what the server answers on its listening port: an error code, or None for nothing)
MALFORMED = {
    "empty": (b"", tp.ILLEGAL_OPERATION),
    "one byte": (b"\x00", tp.ILLEGAL_OPERATION),
    "opcode only": (b"\x00\x01", tp.ILLEGAL_OPERATION),
    "three bytes": (b"\x00\x01\x00", tp.ILLEGAL_OPERATION),
    "missing NUL": (b"\x00\x01small.bin\x00octet", tp.ILLEGAL_OPERATION),
    "no mode": (b"\x00\x01small.bin\x00", tp.ILLEGAL_OPERATION),
    "unknown opcode 7": (b"\x00\x07small.bin\x00octet\x00", tp.ILLEGAL_OPERATION),
    "unknown opcode 65535": (b"\xff\xff", tp.ILLEGAL_OPERATION),
    "ERROR of 3 bytes": (b"\x00\x05\x00", tp.ILLEGAL_OPERATION),
    "ACK to the server port": (tp.ack(1), None),
    "DATA to the server port": (tp.data(1, b"x" * 512), None),
    "OACK to the server port": (b"\x00\x06blksize\x001468\x00", tp.ILLEGAL_OPERATION),
    "huge request": (b"\x00\x01small.bin\x00octet\x00blksize\x00" + b"9" * 4000 + b"\x00",
                     tp.ILLEGAL_OPERATION),
    "WRQ": (tp.request("new.bin", opcode=tp.WRQ), tp.ACCESS_VIOLATION),
    "WRQ over a file": (tp.request("small.bin", opcode=tp.WRQ), tp.ACCESS_VIOLATION),
    "dot-dot": (tp.request("../secret.txt"), tp.ACCESS_VIOLATION),
    "absolute": (tp.request("/etc/passwd"), tp.ACCESS_VIOLATION),
    "symlink escaping": (tp.request("escape"), tp.ACCESS_VIOLATION),
    "NUL in the name": (b"\x00\x01small.bin\x00../secret.txt\x00octet\x00", tp.ILLEGAL_OPERATION),
    "backslashes": (tp.request("sub\\..\\..\\secret.txt"), tp.ACCESS_VIOLATION),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_packet_then_a_real_fetch(
    server: TftpServer,
    root: Path,
    case: str,
) -> None:
    before = listing(root)
    packet, code = MALFORMED[case]
    c = RawClient(server.port)
    try:
        c.send(packet)
        answer = c.recv(0.5 if code is None else 2.0)
    finally:
        c.close()
    if code is None:
        assert answer is None
    else:
        assert isinstance(answer, tp.Error) and answer.code == code, answer
        assert "not for clients" not in answer.message
    still_serves(server, root)
    assert listing(root) == before  # nothing written, nothing removed


@pytest.mark.parametrize(
    ("options", "granted"),
    [({"blksize": "abc"}, None), ({"blksize": "99999999"}, {"blksize": "65464"}),
     ({"blksize": "1" * 11}, None), ({"blksize": "0"}, None), ({"blksize": "-1"}, None),
     ({"BLKSIZE": "1468", "TSIZE": "0"}, {"blksize": "1468", "tsize": "99844"}),
     ({"windowsize": "99999"}, {"windowsize": "64"}), ({"timeout": "9999"}, None),
     ({"utimeout": "1000", "rollover": "0"}, None)],
)  # fmt: skip
def test_bad_and_huge_option_values(
    server: TftpServer,
    root: Path,
    options: dict[str, str],
    granted: dict[str, str] | None,
) -> None:
    c = RawClient(server.port)
    try:
        c.send(tp.request("small.bin", options))
        first = c.recv()
        c.send(tp.error(0, "enough"))  # end it, as a client that only probed does
    finally:
        c.close()
    if granted is None:  # nothing granted: no OACK at all, the data starts
        assert isinstance(first, tp.Data) and first.block == 1 and len(first.payload) == 512
    else:
        assert isinstance(first, tp.Request) and first.opcode == tp.OACK
        assert dict(first.options) == granted
    still_serves(server, root)


def test_hostile_packets_inside_a_transfer_never_cause_a_resend(root: Path) -> None:
    # (a long timeout: any repeated block here can only come from a hostile packet)
    server = TftpServer(root, address="127.0.0.1", port=0, timeout=10.0).start()
    try:
        _inside_a_transfer(server, root)
    finally:
        server.stop()


def _inside_a_transfer(server: TftpServer, root: Path) -> None:
    """A whole transfer in which every ACK is followed by duplicates, ACKs for blocks never
    sent, a DATA packet and a short ERROR-like packet: exactly one DATA packet per block."""
    expected = (root / "small.bin").read_bytes()
    done = server.counters["completed"]
    c = RawClient(server.port)
    got, packets = bytearray(), 0
    try:
        c.send(tp.request("small.bin"))
        while True:
            block = c.recv()
            assert isinstance(block, tp.Data), block
            packets += 1
            assert block.block == (packets & 0xFFFF)  # never a repeated block
            got += block.payload
            c.send(tp.ack(block.block))
            if len(block.payload) < 512:
                break
            for hostile in (
                tp.ack(block.block),
                tp.ack(block.block),
                tp.ack(block.block + 5),
                tp.ack(65535),
                tp.data(block.block, b"x"),
                b"\x00\x04\x00",
            ):
                c.send(hostile)  # fmt: skip
        # Once the transfer is over, the server sends nothing more for it: what is waiting
        # now is all it sent after the last block.
        wait_for(lambda: server.counters["completed"] > done, 5, "the transfer to complete")
        assert c.waiting() == []
    finally:
        c.close()
    assert bytes(got) == expected and packets == len(expected) // 512 + 1


def test_an_error_of_3_bytes_ends_a_transfer(server: TftpServer, root: Path) -> None:
    c = RawClient(server.port)
    try:
        c.send(tp.request("small.bin"))
        assert isinstance(c.recv(), tp.Data)
        c.send(b"\x00\x05\x00")
        # Ended at once, not after its retries: nothing was sent again before it ended (a
        # silent client does get resends: test_a_silent_client_is_dropped_after_its_retries).
        wait_for(lambda: server.active == 0, 5, "the transfer to end")
        assert c.waiting() == []
    finally:
        c.close()
    still_serves(server, root)


def test_at_most_a_few_transfers_per_address(server: TftpServer, root: Path) -> None:
    clients = [from_address("127.0.0.4") for _ in range(server.max_per_client + 2)]
    try:
        answers = []
        for s in clients:
            s.sendto(tp.request("small.bin"), ("127.0.0.1", server.port))
            answers.append(tp.parse(s.recvfrom(2048)[0]))
        assert [type(a).__name__ for a in answers] == ["Data"] * 4 + ["Error"] * 2
        assert all("too many transfers from your address" in a.message
                   for a in answers if isinstance(a, tp.Error))  # fmt: skip
        still_serves(server, root)  # another address is not affected
    finally:
        for s in clients:
            s.close()


def test_a_flood_of_requests_from_one_address_is_mostly_dropped(root: Path) -> None:
    server = TftpServer(root, address="127.0.0.1", port=0).start()  # the default limits
    try:
        _flood(server, root)
    finally:
        server.stop()


def _flood(server: TftpServer, root: Path) -> None:
    sent = 300
    limited, requests = server.counters["limited"], server.counters["requests"]
    s = from_address("127.0.0.5")
    started = time.monotonic()
    try:
        for i in range(sent):  # all for a missing file: each would get an error packet
            s.sendto(tp.request("missing.bin"), ("127.0.0.1", server.port))
            if i % 50 == 49:
                time.sleep(0.01)  # (not faster than the socket's buffer takes them)
        answered = 0
        s.settimeout(0.5)
        while True:
            try:
                s.recvfrom(2048)
            except TimeoutError:
                break
            answered += 1
    finally:
        s.close()
    # tokens come back at 10 a second for as long as the server was reading: at most the
    # time from the first request to the last answer read
    took = time.monotonic() - started
    allowed = 2 * 10 + 10 * took  # burst twice the rate, then 10 a second
    received = server.counters["requests"] - requests  # (the kernel may drop a few)
    assert answered <= allowed, (answered, took)
    assert server.counters["limited"] - limited >= received - allowed
    still_serves(server, root)


@pytest.mark.slow
def test_a_new_client_is_served_while_stalled_clients_hold_the_cap(root: Path) -> None:
    """32 transfers (the cap here) held by 8 addresses that asked and never answered; a new
    client still gets 1 MiB: it takes the place of exactly one silent transfer, at once. The
    stalled transfers never give up on their own here (1000 resends), so nothing but that
    place-taking can have let it in, and it is never told the server is busy."""
    need(CURL)
    (root / "mib.bin").write_bytes(MIB)
    s = TftpServer(root, address="127.0.0.1", port=0, timeout=0.5, retries=1000,
                   unanswered_retries=1000, max_transfers=32, max_per_client=4).start()  # fmt: skip
    stalled = [from_address(f"127.0.0.{10 + i // 4}") for i in range(32)]
    try:
        for i, c in enumerate(stalled):  # half with options (an OACK waits), half without
            c.sendto(tp.request("mib.bin", {"blksize": "1468"} if i % 2 else None),
                     ("127.0.0.1", s.port))  # fmt: skip
        wait_for(lambda: s.active == 32, 5, "32 stalled transfers")
        for c in stalled:  # its first packet sent again: silent for a whole timeout
            c.settimeout(30)
            assert c.recvfrom(2048)[0] == c.recvfrom(2048)[0]
        out = curl(s.port, "mib.bin", "--tftp-blksize", "1468")
        assert out.returncode == 0 and out.stdout == MIB
        wait_for(lambda: s.counters["completed"] == 1, 5, "the new transfer to be counted")
        wait_for(lambda: s.counters["cancelled"] == 1, 5, "one stalled transfer cancelled")
        assert s.counters["failed"] == 0 and s.counters["refused"] == 0, s.counters
        wait_for(lambda: s.active == 31, 5, "31 stalled transfers left")
    finally:
        for c in stalled:
            c.close()
        s.stop()


def test_a_full_cap_of_answering_clients_is_never_cancelled(
    root: Path,
) -> None:
    """Only silent transfers give way: when every client has answered, a new one is told
    the server is busy, even after they were silent for a whole timeout since."""
    s = TftpServer(root, address="127.0.0.1", port=0, timeout=0.2,
                   max_transfers=2, max_per_client=4).start()  # fmt: skip
    a, b = RawClient(s.port), RawClient(s.port)
    try:
        for c in (a, b):
            c.send(tp.request("small.bin"))
            assert isinstance(c.recv(), tp.Data)
            c.send(tp.ack(1))  # answered: a real client
            second = c.recv()
            assert isinstance(second, tp.Data) and second.block == 2
        for c in (a, b):  # block 2 sent again: silent for a whole timeout since
            again = c.recv(10)
            assert isinstance(again, tp.Data) and again.block == 2
        late = from_address("127.0.0.6")
        late.sendto(tp.request("small.bin"), ("127.0.0.1", s.port))
        answer = tp.parse(late.recvfrom(2048)[0])
        late.close()
        assert isinstance(answer, tp.Error) and answer.message == "server busy, try again"
        assert s.counters["cancelled"] == 0
    finally:
        a.close()
        b.close()
        s.stop()


@pytest.mark.slow
def test_spoofed_requests_make_the_server_send_a_bounded_amount(
    root: Path,
) -> None:
    """200 read requests that claim to come from 127.0.0.20, whose owner never answers: the
    bytes sent there, until the server has given every transfer up, are bounded by the
    limits (and recorded in docs/RELIABILITY.md as the amplification factor)."""
    timeout = 0.5
    s = TftpServer(root, address="127.0.0.1", port=0, timeout=timeout).start()
    victims = [from_address("127.0.0.20") for _ in range(200)]
    request = tp.request("small.bin")  # no options: the worst case, 512 bytes of data at once
    try:
        started = time.monotonic()
        for i, v in enumerate(victims):
            v.sendto(request, ("127.0.0.1", s.port))
            if i % 50 == 49:
                time.sleep(0.01)  # (not faster than the server's socket buffer takes them)
        wait_for(lambda: s.counters["requests"] == len(victims), 10, "the requests read")
        reading = time.monotonic() - started  # tokens came back at 10/s meanwhile
        # a transfer nobody answers is given up after the first send and 2 resends
        wait_for(lambda: s.active == 0, 30, "every spoofed transfer given up")
        received = packets = 0
        for v in victims:
            v.setblocking(False)
            while True:
                try:
                    received += len(v.recv(70000))
                    packets += 1
                except BlockingIOError:
                    break
    finally:
        for v in victims:
            v.close()
        s.stop()
    asked = len(victims) * len(request)
    per_transfer = 3 * (4 + 512)  # the first DATA and UNANSWERED_RETRIES=2 resends
    answered = 2 * 10 + 10 * reading  # requests the per-address rate lets through
    bound = s.max_per_client * per_transfer + answered * 64  # the rest: small error packets
    factor = received / asked
    print(f"\n{len(victims)} spoofed requests ({asked} bytes) → {received} bytes in {packets} "
          f"packets to the silent address; factor {factor:.2f} (UDP payload), "
          f"{(received + 28 * packets) / (asked + 28 * len(victims)):.2f} on the wire")  # fmt: skip
    assert 0 < received <= bound, (received, bound)
    assert factor < 3
