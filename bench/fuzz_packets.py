"""Fuzz a live pxeserver with hostile TFTP and ProxyDHCP packets, and check what it did.

    nice .venv/bin/python -m bench.fuzz_packets                       # 1,000,000 packets
    nice .venv/bin/python -m bench.fuzz_packets --packets 20000 --seed 7 --out bench/results

It starts ``pxeserver serve`` (as a user starts it: TFTP transfer processes, ProxyDHCP on
free loopback ports, the embedded store, the default limits) on a TFTP root with files, a
sub-folder, a symlink that leads out of the root, and a file outside the root holding a
marker. Then it sends packets: half TFTP, half DHCP, each a valid packet (read and write
requests with every option in every spelling, ACK, DATA, ERROR, OACK; the golden DHCP
packets of tests/data/dhcp with random MACs) mutated at random with probability 0.7 (bit
flips, bytes replaced, inserted, deleted, truncated, repeated; option lengths past the end;
option 52 loops). TFTP requests come from fresh sockets on 512 loopback addresses
(127.77.x.y) so that the per-address limits do not hide the parser; when the server answers a
request, the fuzzer sends mutated ACK, ERROR and DATA packets to that transfer's port too.

Checked, and reported in the JSON/Markdown result:
- ``crashes``: the server process exited, or its log has a traceback ("unexpected error");
- ``server_answering``: a real client (curl over TFTP) fetches a file and a golden DISCOVER
  gets its OFFER, every ``--probe-every`` packets and at the end;
- ``outside_root_served``: packets that carried bytes of the file outside the root;
- ``files_written``: files created or changed in the TFTP root, the assets folder or next
  to them (the registry's database excepted);
- ``unasked_options``: OACK options the request did not name (or a value out of what was
  asked); ``dhcp_addresses_given``: replies with an address in yiaddr;
- ``registry_nodes``: nodes the DHCP flood of random MACs left in the registry, and the bound
  ``limits.new_macs_per_second`` sets for the run's length.

Deterministic for a given ``--seed`` (the packets, not the timing). Stops by itself; the
server is stopped by its PID. Importable: :func:`run` (tests/serve/test_fuzz.py runs a seed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.benchlib import REPO, free_port
from pxeserver.dhcp import packets as dp

CURL = shutil.which("curl") or "/usr/bin/curl"
GOLDEN = REPO / "tests" / "data" / "dhcp"
ADDRESSES = [f"127.77.{i // 200}.{1 + i % 200}" for i in range(512)]
KEEP_SOCKETS = 1500  # client sockets kept open to read answers; older ones are closed
NAMES = [
    "small.bin", "medium.bin", "sub/inner.txt", "inside", "boot.ipxe", "empty.bin",
    "pxelinux.cfg/01-52-54-00-12-34-56", "assets/coreos/vmlinuz", "missing.bin",
    "../outside/secret.txt", "sub/../../outside/secret.txt", "escape", "ESCAPE", "/etc/passwd",
    "//etc/passwd", "./small.bin", "sub//inner.txt", "%2e%2e/outside/secret.txt",
    "sub\\..\\..\\outside\\secret.txt", "assets/../../outside/secret.txt", "assets/../escape",
    "a" * 300, "small.bin\x00../outside/secret.txt", "\x7fbin", "sub/", "",
]  # fmt: skip
OPTION_NAMES = ["blksize", "BLKSIZE", "BlkSize", "tsize", "TSIZE", "timeout", "TIMEOUT",
                "windowsize", "WindowSize", "multicast", "rollover", "x", ""]  # fmt: skip
OPTION_VALUES = ["512", "1468", "8", "7", "0", "-1", "65464", "65465", "65535", "99999999",
                 "1" * 40, "abc", "", " 12", "12 ", "0x10", "4", "64", "1000", "255", "256",
                 "1e3", "\u00bd"]  # fmt: skip
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 52, 53, 255]


# -- packets ---------------------------------------------------------------------------------


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three random edits of ``data``."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(8)
        n = len(b)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # an interesting byte
            b[rng.randrange(n)] = rng.choice(INTERESTING)
        elif op == 2:  # insert bytes
            i = rng.randrange(n + 1)
            b[i:i] = os.urandom(rng.randint(1, 8)) if rng.random() < 0.5 else b"\0"
        elif op == 3 and n:  # delete a span
            i = rng.randrange(n)
            del b[i : i + rng.randint(1, 16)]
        elif op == 4 and n:  # truncate
            del b[rng.randrange(n) :]
        elif op == 5 and n:  # repeat a span
            i = rng.randrange(n)
            b[i:i] = b[i : i + rng.randint(1, 32)] * rng.randint(1, 4)
        elif op == 6:  # garbage at the end
            b += os.urandom(rng.randint(1, 64))
        elif op == 7 and n:  # a random byte
            b[rng.randrange(n)] = rng.randrange(256)
    return bytes(b[:4096])


def tftp_request(rng: random.Random) -> bytes:
    opcode = 1 if rng.random() < 0.9 else 2  # RRQ, sometimes WRQ
    mode = rng.choice(["octet", "octet", "netascii", "OCTET", "mail", "binary"])
    body = rng.choice(NAMES).encode("latin-1") + b"\0" + mode.encode() + b"\0"
    for _ in range(rng.choice([0, 0, 1, 2, 3, 4, 6])):
        body += rng.choice(OPTION_NAMES).encode() + b"\0"
        body += rng.choice(OPTION_VALUES).encode("utf-8") + b"\0"
    if rng.random() < 0.05:
        body = body[:-1]  # the last NUL missing
    return bytes((0, opcode)) + body


def tftp_other(rng: random.Random) -> bytes:
    """ACK, DATA, ERROR, OACK, an unknown opcode, or noise."""
    kind = rng.randrange(7)
    block = rng.choice([0, 1, 2, 65535, rng.randrange(65536)]).to_bytes(2, "big")
    if kind == 0:
        return b"\0\x04" + block
    if kind == 1:
        return b"\0\x03" + block + os.urandom(rng.choice([0, 1, 512]))
    if kind == 2:
        return rng.choice([b"\0\x05\0", b"\0\x05", b"\0\x05\0\x01oops\0", b"\0\x05\0\x08"])
    if kind == 3:
        return b"\0\x06blksize\0" + rng.choice(OPTION_VALUES).encode("utf-8") + b"\0"
    if kind == 4:
        return rng.randrange(7, 65536).to_bytes(2, "big") + os.urandom(rng.randrange(16))
    if kind == 5:
        return os.urandom(rng.randrange(0, 3))
    return os.urandom(rng.randrange(0, 600))


def requested_options(packet: bytes) -> dict[str, str] | None:
    """The options an RRQ names, read independently of the server's parser (None: not one)."""
    if len(packet) < 2 or packet[:2] != b"\0\x01":
        return None
    fields = packet[2:].split(b"\0")
    out: dict[str, str] = {}
    for i in range(2, len(fields) - 1, 2):
        name = fields[i].decode("latin-1").lower()
        out.setdefault(name, fields[i + 1].decode("latin-1"))
    return out


def golden_packets() -> list[bytes]:
    found = []
    for path in sorted(GOLDEN.glob("*.hex")) + sorted(GOLDEN.glob("captured/*.hex")):
        found.append(bytes.fromhex(path.read_text().replace("\n", "")))
    return found


def dhcp_packet(rng: random.Random, seeds: list[bytes]) -> bytes:
    b = bytearray(rng.choice(seeds))
    b[28:34] = bytes([0x02]) + os.urandom(5)  # a random (locally administered) MAC
    b[4:8] = os.urandom(4)  # xid
    roll = rng.random()
    if roll < 0.1:  # an option whose length runs past the end
        return bytes(b[:-1]) + bytes([rng.choice([60, 93, 97]), 255]) + os.urandom(3)
    if roll < 0.2:  # option 52 (overload) with any value, and options in file and sname
        over = bytes([52, 1, rng.randrange(256)])
        b[108:236] = bytes([52, 1, 3, 53, 1, 1, 255]).ljust(128, b"\0")
        b[44:108] = bytes([52, 1, 1, 255]).ljust(64, b"\0")
        return bytes(b[:240]) + over + bytes(b[240:])
    if roll < 0.3:
        return bytes(b[: rng.randrange(len(b))])
    return mutate(rng, bytes(b)) if roll < 0.9 else bytes(b)


# -- the server ------------------------------------------------------------------------------


@dataclass
class Site:
    """The server's files, and a snapshot of them to tell whether anything was written."""

    base: Path
    marker: bytes = field(default_factory=lambda: b"OUTSIDE-ROOT-" + os.urandom(8).hex().encode())

    @property
    def root(self) -> Path:
        return self.base / "tftproot"

    def make(self) -> None:
        r = self.root
        (r / "sub").mkdir(parents=True)
        (r / "small.bin").write_bytes(os.urandom(3000))
        (r / "medium.bin").write_bytes(os.urandom(200_000))
        (r / "empty.bin").write_bytes(b"")
        (r / "sub" / "inner.txt").write_bytes(b"inner\n")
        outside = self.base / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_bytes(self.marker * 40)
        (r / "escape").symlink_to(outside / "secret.txt")
        (r / "inside").symlink_to(r / "small.bin")
        kernel = self.base / "assets" / "coreos" / "vmlinuz"
        kernel.parent.mkdir(parents=True)
        kernel.write_bytes(os.urandom(50_000))

    def snapshot(self) -> dict[str, tuple[int, int]]:
        seen: dict[str, tuple[int, int]] = {}
        for path in self.base.rglob("*"):
            rel = path.relative_to(self.base)
            if rel.parts[0] in ("var", "server.log", "pxeserver.yaml"):
                continue
            st = path.lstat()
            seen[str(rel)] = (st.st_size, st.st_mtime_ns)
        return seen


class Server:
    def __init__(self, site: Site, new_macs_per_second: int) -> None:
        self.site = site
        self.tftp_port = free_port(socket.SOCK_DGRAM)
        self.dhcp_port = free_port(socket.SOCK_DGRAM)
        self.pxe_port = free_port(socket.SOCK_DGRAM)
        self.http_port = free_port()
        self.log = site.base / "server.log"
        self.new_macs_per_second = new_macs_per_second
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.site.base / "pxeserver.yaml"
        config.write_text(json.dumps({
            "paths": {"tftp_root": str(self.site.root), "data_dir": str(self.site.base / "var"),
                      "assets_dir": str(self.site.base / "assets")},
            "limits": {"new_macs_per_second": self.new_macs_per_second},
        }))  # fmt: skip
        cmd = [sys.executable, "-m", "pxeserver", "serve", "--config", str(config),
               "--listen", "127.0.0.1", "--tftp-port", str(self.tftp_port),
               "--dhcp-port", str(self.dhcp_port), "--pxe-port", str(self.pxe_port),
               "--http-port", str(self.http_port), "--workers", "1"]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.site.base, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pxeserver exited at start:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url("/healthz"), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("pxeserver did not start within 60 s")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def nodes(self) -> int:
        with urllib.request.urlopen(self.url("/api/v1/nodes"), timeout=10) as r:
            return int(json.load(r)["count"])

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Report:
    packets: int = 0
    tftp_packets: int = 0
    dhcp_packets: int = 0
    to_transfers: int = 0  # of the TFTP packets: sent to a transfer's own port
    answers: int = 0
    crashes: int = 0
    server_answering: bool = True
    probes_ok: int = 0
    probes_failed: int = 0
    outside_root_served: int = 0
    files_written: int = 0
    unasked_options: int = 0
    dhcp_addresses_given: int = 0
    registry_nodes: int = 0
    registry_nodes_bound: int = 0
    kernel_dropped: int = 0  # dropped by the kernel at the server's full receive buffers
    reached_server: int = 0  # packets, less those (transfer ports not counted)
    seconds: float = 0.0
    packets_per_second: float = 0.0
    seed: int = 0
    exit_code: int | None = None
    findings: list[str] = field(default_factory=list)


def udp_drops(ports: set[int]) -> int:
    """Datagrams the kernel dropped at the server's sockets (their receive buffers were full):
    the ``drops`` column of /proc/net/udp for the sockets bound to ``ports``."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    total = 0
    for line in lines:
        fields = line.split()
        if len(fields) >= 13 and int(fields[1].rsplit(":", 1)[1], 16) in ports:
            total += int(fields[12])
    return total


class Fuzzer:
    def __init__(self, server: Server, site: Site, rng: random.Random, report: Report) -> None:
        self.server = server
        self.site = site
        self.rng = rng
        self.report = report
        self.seeds = golden_packets()
        self.sel = selectors.DefaultSelector()
        self.clients: dict[socket.socket, dict[str, str] | None] = {}  # → options asked
        self.order: list[socket.socket] = []
        self.pairs = 0  # (address, port) pairs used
        self.dhcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.dhcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.dhcp.bind(("127.0.0.1", 0))
        self.dhcp.setblocking(False)
        self.sel.register(self.dhcp, selectors.EVENT_READ)

    def finding(self, text: str) -> None:
        if len(self.report.findings) < 50:
            self.report.findings.append(text)

    # sending

    def _client(self) -> socket.socket:
        """A fresh socket on an (address, port) pair never used before in this run, so that
        a late answer to an earlier request can never be taken for an answer to this one."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while True:
            i = self.pairs
            self.pairs += 1
            try:
                s.bind((ADDRESSES[i % len(ADDRESSES)], 20000 + (i // len(ADDRESSES)) % 40000))
                break
            except OSError:
                continue  # that port is taken on this machine: the next pair
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ)
        self.clients[s] = None
        self.order.append(s)
        if len(self.order) > KEEP_SOCKETS:
            old = self.order.pop(0)
            self.sel.unregister(old)
            self.clients.pop(old, None)
            old.close()
        return s

    def send_tftp(self) -> None:
        rng = self.rng
        packet = tftp_request(rng) if rng.random() < 0.75 else tftp_other(rng)
        if rng.random() < 0.5:
            packet = mutate(rng, packet)  # (a mutated ACK may well be a request now)
        # one packet to the server's port per socket: what it answers, it answers to that
        s = self._client()
        self.clients[s] = requested_options(packet)
        self._sendto(s, packet, ("127.0.0.1", self.server.tftp_port))
        self.report.tftp_packets += 1

    def send_dhcp(self) -> None:
        port = self.server.pxe_port if self.rng.random() < 0.2 else self.server.dhcp_port
        self._sendto(self.dhcp, dhcp_packet(self.rng, self.seeds), ("127.0.0.1", port))
        self.report.dhcp_packets += 1

    def _sendto(self, s: socket.socket, packet: bytes, to: tuple[str, int]) -> None:
        try:
            s.sendto(packet, to)
        except BlockingIOError:
            time.sleep(0.001)  # the socket's send buffer is full: the packet is skipped
            return
        except OSError:
            return
        self.report.packets += 1

    # reading what came back

    def drain(self, wait: float = 0.0) -> None:
        for key, _ in self.sel.select(wait):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            while True:
                try:
                    data, peer = s.recvfrom(70000)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break  # ICMP from a closed port, and the like
                self.report.answers += 1
                if s is self.dhcp:
                    self.check_dhcp(data)
                else:
                    self.check_tftp(s, data, peer)

    def check_dhcp(self, data: bytes) -> None:
        try:
            reply = dp.parse(data)
        except dp.PacketError as exc:
            self.finding(f"an unreadable DHCP reply: {exc}")
            return
        if reply.yiaddr != "0.0.0.0":
            self.report.dhcp_addresses_given += 1
            self.finding(f"a DHCP reply offered {reply.yiaddr}")

    def check_tftp(self, s: socket.socket, data: bytes, peer: tuple[str, int]) -> None:
        if self.site.marker[:16] in data:
            self.report.outside_root_served += 1
            self.finding(f"bytes of the file outside the root were sent to {s.getsockname()}")
        if data[:2] == b"\0\x06":
            self.check_oack(s, data)
        if peer[1] != self.server.tftp_port and data[:2] in (b"\0\x03", b"\0\x06"):
            # a transfer answered: poke its own port with hostile packets too
            for _ in range(self.rng.randint(0, 3)):
                packet = tftp_other(self.rng)
                if self.rng.random() < 0.3:
                    packet = mutate(self.rng, packet)
                self._sendto(s, packet, peer)
                self.report.tftp_packets += 1
                self.report.to_transfers += 1

    def check_oack(self, s: socket.socket, data: bytes) -> None:
        asked = self.clients.get(s)
        fields = data[2:].split(b"\0")
        if fields and fields[-1] == b"":
            fields = fields[:-1]
        for i in range(0, len(fields) - 1, 2):
            name = fields[i].decode("latin-1")
            value = fields[i + 1].decode("latin-1")
            if asked is None or name not in asked:
                self.report.unasked_options += 1
                self.finding(f"OACK option {name}={value} was not asked for ({asked})")
            elif not _value_ok(name, value, asked[name]):
                self.report.unasked_options += 1
                self.finding(f"OACK {name}={value} does not fit the request's {asked[name]!r}")

    # probes: a real client still gets served

    def probe(self) -> bool:
        expected = (self.site.root / "small.bin").read_bytes()
        out = subprocess.run([CURL, "-s", "--max-time", "15", "--tftp-blksize", "1468",
                              f"tftp://127.0.0.1:{self.server.tftp_port}/small.bin"],
                             capture_output=True, timeout=30, check=False)  # fmt: skip
        tftp_ok = out.returncode == 0 and out.stdout == expected
        dhcp_ok = False
        discover = next(p for p in self.seeds if _is_bios_discover(p))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.bind(("127.0.0.1", 0))
            c.settimeout(2)
            for _ in range(3):
                c.sendto(discover, ("127.0.0.1", self.server.dhcp_port))
                try:
                    reply = dp.parse(c.recv(4096))
                except (TimeoutError, dp.PacketError):
                    continue
                dhcp_ok = reply.message_type == dp.OFFER and reply.file == b"undionly.kpxe"
                if dhcp_ok:
                    break
        ok = tftp_ok and dhcp_ok and self.server.alive()
        if ok:
            self.report.probes_ok += 1
        else:
            self.report.probes_failed += 1
            self.finding(f"probe failed: tftp {tftp_ok}, dhcp {dhcp_ok}")
        return ok

    def close(self) -> None:
        for s in [*self.order, self.dhcp]:
            s.close()
        self.sel.close()


def _number(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def _value_ok(name: str, granted: str, asked: str) -> bool:
    """Whether an OACK value fits what was asked (RFC 2347-2349, 7440)."""
    value, wanted = _number(granted), _number(asked)
    if value is None:
        return False
    if name == "tsize":
        return True
    if wanted is None:
        return False  # a value that is not a number must not be granted
    if name == "blksize":
        return 8 <= value <= min(65464, wanted)
    if name == "windowsize":
        return 1 <= value <= wanted
    if name == "timeout":
        return value == wanted and 1 <= value <= 255
    return False


def _is_bios_discover(packet: bytes) -> bool:
    try:
        p = dp.parse(packet)
    except dp.PacketError:
        return False
    return p.message_type == dp.DISCOVER and p.client_arch == 0 and not p.is_ipxe


def run(packets: int, *, seed: int = 1, probe_every: int = 50_000, batch: int = 200,
        new_macs_per_second: int = 20, workdir: Path | None = None) -> Report:  # fmt: skip
    """Fuzz a fresh server with ``packets`` packets; the report says what it did."""
    report = Report(seed=seed)
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="pxeserver-fuzz-", dir=workdir))
    site = Site(base)
    site.make()
    before = site.snapshot()
    server = Server(site, new_macs_per_second)
    server.start()
    fuzzer = Fuzzer(server, site, rng, report)
    ports = {server.tftp_port, server.dhcp_port, server.pxe_port}
    drops_before = udp_drops(ports)
    started = time.monotonic()
    try:
        next_probe = probe_every
        pause, drops = 0.0, drops_before
        while report.packets < packets and server.alive():
            for _ in range(batch):
                if rng.random() < 0.5:
                    fuzzer.send_tftp()
                else:
                    fuzzer.send_dhcp()
            fuzzer.drain(0.002)
            # Pace to what the server reads: the kernel drops what overflows its buffers,
            # and a dropped packet tests nothing.
            now_drops = udp_drops(ports)
            pause = min(max(pause * 2, 0.01), 0.5) if now_drops > drops else pause * 0.8
            drops = now_drops
            if pause > 0.001:
                time.sleep(pause)
                fuzzer.drain()
            if report.packets >= next_probe:
                next_probe += probe_every
                fuzzer.drain(0.2)
                fuzzer.probe()
        fuzzer.drain(0.5)
        report.seconds = round(time.monotonic() - started, 1)
        report.server_answering = fuzzer.probe() and server.alive()
        report.registry_nodes = server.nodes() if server.alive() else -1
        # what the budget allows until now (twice the rate as a burst), plus the probes' MAC
        until_now = time.monotonic() - started
        rate = new_macs_per_second
        report.registry_nodes_bound = int(2 * rate + rate * until_now) + 1
    finally:
        fuzzer.close()
        report.kernel_dropped = udp_drops(ports) - drops_before
        report.reached_server = max(0, report.packets - report.kernel_dropped)
        alive = server.alive()
        report.exit_code = server.stop()
        log = server.log.read_text(errors="replace")
        tracebacks = log.count("Traceback") + log.count("unexpected error")
        report.crashes = (0 if alive else 1) + tracebacks
        if tracebacks:
            report.findings.append(f"{tracebacks} tracebacks in {server.log}")
    after = site.snapshot()
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    report.files_written = len(changed)
    report.findings += [f"written: {k}" for k in sorted(changed)[:20]]
    report.packets_per_second = round(report.packets / max(report.seconds, 0.001))
    if not report.crashes and not report.findings:
        shutil.rmtree(base, ignore_errors=True)
    return report


def markdown(report: Report) -> str:
    rows = [(k, v) for k, v in asdict(report).items() if k != "findings"]
    text = "| figure | value |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    if report.findings:
        text += "\nFindings:\n\n" + "".join(f"- {f}\n" for f in report.findings)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--probe-every", type=int, default=50_000)
    ap.add_argument("--out", type=Path, default=None, help="folder for the JSON and Markdown")
    args = ap.parse_args(argv)
    # a SIGTERM (or ^C) still stops the server it started, by its PID
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(args.packets, seed=args.seed, probe_every=args.probe_every)
    data: dict[str, Any] = asdict(report)
    print(json.dumps(data, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (args.out / f"fuzz-{stamp}.json").write_text(json.dumps(data, indent=2) + "\n")
        (args.out / f"fuzz-{stamp}.md").write_text(markdown(report))
    bad = report.crashes or report.outside_root_served or report.files_written
    bad = bad or report.unasked_options or report.dhcp_addresses_given
    return 1 if bad or not report.server_answering else 0


if __name__ == "__main__":
    sys.exit(main())
