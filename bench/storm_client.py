"""The simulated machines of the boot storm: what PXE firmware and iPXE do, N at a time.

Run inside the machines' network namespace by :mod:`bench.storm` (``python -m
bench.storm_client --spec JSON``); prints one JSON document with every machine's step
times and errors. Each machine, as firmware and iPXE would:

1. ``dhcp``: a ProxyDHCP DISCOVER, broadcast from port 68 (option 60 ``PXEClient``,
   93 = BIOS, 97 = its UUID); the OFFER names the boot file. An OFFER without a file
   (dnsmasq's PXE menu) is followed by a REQUEST to the server's port 4011, as PXE
   firmware does; its ACK names the file. Retried after 4, 8 and 16 s (PXE 2.1).
2. ``tftp``: read request for the boot file (blksize 1432, tsize), lockstep, from a
   socket of its own; the bytes are compared with the expected file's SHA-256. A block
   not answered in 1 s is asked for again (the last ACK resent), five times at most.
3. ``boot.ipxe``: ``GET /boot.ipxe``; its ``chain`` line with iPXE's variables filled in
   (``${netX/mac}``, ``${uuid}``, ``${buildarch}`` i386, ``${platform}`` pcbios,
   ``${netX/ip}``) is
4. ``ipxe``: the machine's own script; its ``kernel`` and ``initrd`` lines name
5. ``kernel`` and ``initrd``: fetched one after the other, every byte counted against
   Content-Length and the expected size; the kernel line's ``cloud-config-url=`` names
6. ``cloud-config``: from which the ready URL and the node's token are read as the
   shipped unit reads them (``PXESERVER_READY_URL``/``PXESERVER_TOKEN`` in
   ``/etc/pxeserver/node.env``, or the coreos template's ``curl`` line), then
7. ``ready``: ``POST`` with ``Authorization: Bearer <token>``; any 2xx is success.

Every HTTP request is a connection of its own (``Connection: close``). A step that fails
ends that machine: its error is counted once, under the step where it happened. Machines
start all at once (``burst``) or in waves of ``wave`` machines every ``interval`` s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
import resource
import socket
import struct
import sys
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.benchlib import machine_ip
from pxeserver.dhcp import packets as dp

STEPS = ("dhcp", "tftp", "boot.ipxe", "ipxe", "kernel", "initrd", "cloud-config", "ready")
DHCP_TIMEOUTS = (4.0, 8.0, 16.0, 32.0)
TFTP_TIMEOUT = 1.0
TFTP_TRIES = 5
HTTP_TIMEOUT = 600.0
BLKSIZE = 1432
KEEP = 1 << 16  # this much of a response is kept (scripts, cloud-configs); the rest counted


class StepError(Exception):
    def __init__(self, step: str, what: str) -> None:
        super().__init__(f"{step}: {what}")
        self.step = step


@dataclass
class Spec:
    server: str
    client_ip: str  # the machines' side of the link; each machine has machine_ip(index)
    http_port: int
    tftp_port: int
    dhcp_port: int
    pxe_port: int
    n: int
    mode: str  # burst | waves
    wave: int
    interval: float
    device: str
    boot_sha256: str
    kernel_size: int
    initrd_size: int
    mac_base: int = 0x525400000000

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls(**json.loads(text))


@dataclass
class Result:
    mac: str
    start: float = 0.0
    end: float | None = None
    steps: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    error_step: str | None = None
    dhcp_retries: int = 0
    tftp_retries: int = 0


# -- DHCP ---------------------------------------------------------------------------------------


def discover(mac: bytes, xid: int, uuid: bytes, kind: int, ciaddr: str = "0.0.0.0",
             boot_item: int | None = None) -> bytes:  # fmt: skip
    """A BIOS PXE ROM's DISCOVER (or, with kind=REQUEST, its boot-server request for the
    menu item ``boot_item``, PXE 2.1 option 43 sub-option 71, layer 0)."""
    header = dp.HEADER.pack(
        dp.BOOTREQUEST, 1, 6, 0, xid, 0, dp.BROADCAST_FLAG,
        socket.inet_aton(ciaddr), bytes(4), bytes(4), bytes(4), mac.ljust(16, b"\0"),
        bytes(64), bytes(128),
    )  # fmt: skip
    options = [
        (dp.OPT_MESSAGE_TYPE, bytes([kind])),
        (dp.OPT_PARAMS, bytes([1, 3, 43, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135])),
        (dp.OPT_VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001"),
        (dp.OPT_CLIENT_ARCH, b"\x00\x00"),
        (dp.OPT_CLIENT_NDI, b"\x01\x02\x01"),
        (dp.OPT_CLIENT_UUID, b"\x00" + uuid),
    ]
    if boot_item is not None:
        options.append((dp.OPT_VENDOR, bytes([71, 4]) + struct.pack("!HH", boot_item, 0) + b"\xff"))
    body = b"".join(bytes([code, len(value)]) + value for code, value in options)
    return header + dp.MAGIC + body + bytes([dp.OPT_END])


class DhcpPort:
    """One socket on port 68 for every machine; answers go to the machine by xid.

    Not an asyncio datagram transport: that reads one datagram per loop iteration, and
    with a thousand machines' TFTP and HTTP sockets ready, an iteration is long enough for
    answers to queue past the firmware's 4 s timeout. This reader drains the socket each
    time it is readable.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.waiting: dict[int, asyncio.Future[dp.DhcpPacket]] = {}
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._drain)

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                packet = dp.parse(data)
            except dp.PacketError:
                continue
            fut = self.waiting.get(packet.xid)
            if fut is not None and not fut.done() and packet.op == dp.BOOTREPLY:
                fut.set_result(packet)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()

    async def ask(self, packet: bytes, xid: int, to: tuple[str, int], r: Result) -> dp.DhcpPacket:
        loop = asyncio.get_running_loop()
        try:
            for i, timeout in enumerate(DHCP_TIMEOUTS):
                fut: asyncio.Future[dp.DhcpPacket] = loop.create_future()
                self.waiting[xid] = fut
                # A full send buffer loses it, as a busy wire would: the retry comes.
                with contextlib.suppress(BlockingIOError):
                    self.sock.sendto(packet, to)
                try:
                    return await asyncio.wait_for(fut, timeout)
                except asyncio.TimeoutError:
                    r.dhcp_retries += 1 if i < len(DHCP_TIMEOUTS) - 1 else 0
            raise StepError("dhcp", f"no answer to {len(DHCP_TIMEOUTS)} tries to {to[0]}:{to[1]}")
        finally:
            self.waiting.pop(xid, None)


def first_menu_item(packet: dp.DhcpPacket) -> int | None:
    """The boot server type of the first item of a PXE menu (option 43, sub-option 9)."""
    data = packet.options.get(dp.OPT_VENDOR, b"")
    i = 0
    while i + 1 < len(data) and data[i] != 255:
        code, size = data[i], data[i + 1]
        if code == 9 and size >= 3:
            return int(struct.unpack_from("!H", data, i + 2)[0])
        i += 2 + size
    return None


async def dhcp_step(port: DhcpPort, spec: Spec, mac: bytes, uuid: bytes, xid: int,
                    r: Result, ip: str) -> str:  # fmt: skip
    offer = await port.ask(
        discover(mac, xid, uuid, dp.DISCOVER), xid, ("255.255.255.255", spec.dhcp_port), r
    )
    boot_file = offer.file.rstrip(b"\0").decode(errors="replace")
    if boot_file:
        return boot_file
    # A PXE menu without a file: the boot-server step on port 4011 for the first menu
    # item, as firmware does when there is one item and no prompt.
    ack = await port.ask(
        discover(mac, xid + 1, uuid, dp.REQUEST, ip, first_menu_item(offer)), xid + 1,
        (spec.server, spec.pxe_port), r,
    )  # fmt: skip
    boot_file = ack.file.rstrip(b"\0").decode(errors="replace")
    if not boot_file:
        raise StepError("dhcp", "neither the OFFER nor the port-4011 ACK named a boot file")
    return boot_file


# -- TFTP ---------------------------------------------------------------------------------------


class TftpRead(asyncio.DatagramProtocol):
    """One lockstep read: RRQ with blksize and tsize, ACK each block, end on a short one."""

    def __init__(self, done: asyncio.Future[bytes], server: tuple[str, int], name: str,
                 r: Result) -> None:  # fmt: skip
        self.done = done
        self.server = server
        self.r = r
        self.rrq = b"\0\1" + b"\0".join(
            [name.encode(), b"octet", b"blksize", str(BLKSIZE).encode(), b"tsize", b"0"]
        ) + b"\0"  # fmt: skip
        self.chunks: list[bytes] = []
        self.block = 0
        self.blksize = 512
        self.peer: tuple[str, int] | None = None
        self.last: bytes = self.rrq
        self.tries = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send(self.rrq, self.server)

    def _send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.last = data
        self.transport.sendto(data, to)
        if self.timer:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(TFTP_TIMEOUT, self._timeout)

    def _timeout(self) -> None:
        if self.done.done():
            return
        self.tries += 1
        self.r.tftp_retries += 1
        if self.tries >= TFTP_TRIES:
            self._finish(StepError("tftp", f"no answer after {TFTP_TRIES} tries"))
            return
        self._send(self.last, self.peer or self.server)

    def _finish(self, outcome: bytes | Exception) -> None:
        if self.timer:
            self.timer.cancel()
        if not self.done.done():
            if isinstance(outcome, Exception):
                self.done.set_exception(outcome)
            else:
                self.done.set_result(outcome)
        if self.transport:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.done.done() or len(data) < 4:
            return
        if self.peer is None:
            self.peer = addr
        elif addr != self.peer:
            return  # another TID: RFC 1350 says answer it with an error; ignoring is enough
        op, arg = struct.unpack_from("!HH", data)
        if op == 5:
            self._finish(StepError("tftp", f"error {arg}: {data[4:-1].decode(errors='replace')}"))
        elif op == 6:  # OACK
            opts = data[2:].split(b"\0")
            got = {opts[i].lower(): opts[i + 1] for i in range(0, len(opts) - 1, 2)}
            self.blksize = int(got.get(b"blksize", b"512"))
            self.tries = 0
            self._send(b"\0\4\0\0", addr)
        elif op == 3:
            if arg == (self.block + 1) & 0xFFFF:
                self.block = arg
                self.chunks.append(data[4:])
                self.tries = 0
                self._send(struct.pack("!HH", 4, arg), addr)
                if len(data) - 4 < self.blksize:
                    self._finish(b"".join(self.chunks))
            elif arg == self.block & 0xFFFF:
                self._send(self.last, addr)  # our ACK was lost: say it again


async def tftp_step(spec: Spec, name: str, r: Result, ip: str) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    server = (spec.server, spec.tftp_port)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: TftpRead(done, server, name, r), local_addr=(ip, 0)
    )
    try:
        data = await done
    finally:
        transport.close()
    if hashlib.sha256(data).hexdigest() != spec.boot_sha256:
        raise StepError("tftp", f"{name}: {len(data)} bytes that are not the boot loader")


# -- HTTP ---------------------------------------------------------------------------------------

SHARED = bytearray(1 << 20)  # every connection reads into this: asyncio reads one at a time


class HttpExchange(asyncio.BufferedProtocol):
    """One request on a connection of its own; the body is kept if small, else counted."""

    def __init__(self, request: bytes, done: asyncio.Future[tuple[int, bytes, int]]) -> None:
        self.request = request
        self.done = done
        self.head = bytearray()
        self.status = 0
        self.length: int | None = None
        self.body = bytearray()
        self.got = 0
        self.in_body = False
        self.chunked = False
        self.line = bytearray()  # chunked: the size line (or the CRLF after a chunk) so far
        self.chunk_left = -1  # chunked: data left in this chunk; 0: its CRLF; -1: a size line
        self.view = memoryview(SHARED)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.in_body:
            self._body(SHARED, 0, nbytes)
            return
        self.head += self.view[:nbytes]
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > 65536:
                self._fail("response header longer than 64 KiB")
            return
        rest = bytes(self.head[end + 4 :])
        self._parse_head(bytes(self.head[:end]))
        self.in_body = True
        self._body(rest, 0, len(rest))

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            name = k.strip().lower()
            if name == b"content-length":
                self.length = int(v.strip())
            elif name == b"transfer-encoding" and b"chunked" in v.lower():
                self.chunked = True

    def _body(self, buf: bytes | bytearray, i: int, n: int) -> None:
        if not self.chunked:
            self._data(buf, i, n)
            return
        # Chunked transfer coding (RFC 9112 7.1), no trailers expected: size line, data,
        # CRLF, ... and a last chunk of size 0.
        while i < n and not self.done.done():
            if self.chunk_left > 0:
                take = min(self.chunk_left, n - i)
                self._data(buf, i, i + take)
                self.chunk_left -= take
                i += take
                continue
            nl = buf.find(b"\n", i, n)
            if nl < 0:
                self.line += buf[i:n]
                return
            self.line += buf[i:nl]
            i = nl + 1
            text = bytes(self.line).split(b";")[0].strip()
            self.line.clear()
            if self.chunk_left == 0:  # that was the CRLF after a chunk's data
                self.chunk_left = -1
                continue
            if not text:
                continue
            size = int(text, 16)
            if size == 0:
                self.length = self.got
                self._done()
                return
            self.chunk_left = size

    def _data(self, buf: bytes | bytearray, i: int, n: int) -> None:
        self.got += n - i
        if len(self.body) + n - i <= KEEP:
            self.body += buf[i:n]
        if not self.chunked and self.length is not None and self.got >= self.length:
            self._done()

    def _done(self) -> None:
        if not self.done.done():
            self.done.set_result((self.status, bytes(self.body), self.got))
        if self.transport:
            self.transport.close()

    def _fail(self, what: str) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(what))
        if self.transport:
            self.transport.close()

    def eof_received(self) -> bool | None:
        if self.in_body and self.length is None and not self.chunked:
            self._done()  # no length, no chunks: the body ends with the connection
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_body and self.length is None and not self.chunked:
            self._done()
        self._fail(f"connection closed after {self.got} body bytes ({exc or 'EOF'})")


async def http(step: str, method: str, url: str, headers: dict[str, str] | None = None,
               expect_size: int | None = None, source: str | None = None) -> bytes:  # fmt: skip
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "User-Agent: storm/1",
             "Connection: close"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if method == "POST":
        lines.append("Content-Length: 0")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, bytes, int]] = loop.create_future()
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: HttpExchange(request, done), parts.hostname,
                                   parts.port or 80,
                                   local_addr=(source, 0) if source else None),
            HTTP_TIMEOUT)  # fmt: skip
        try:
            status, body, got = await asyncio.wait_for(done, HTTP_TIMEOUT)
        finally:
            transport.close()
    except (OSError, asyncio.TimeoutError) as exc:
        raise StepError(step, f"{method} {path}: {type(exc).__name__}: {exc}") from None
    if not 200 <= status < 300:
        raise StepError(step, f"{method} {path}: HTTP {status}: {body[:200]!r}")
    if expect_size is not None and got != expect_size:
        raise StepError(step, f"{method} {path}: {got} bytes, expected {expect_size}")
    return body


# -- one machine --------------------------------------------------------------------------------

CHAIN = re.compile(r"^chain\s+(?:--\S+\s+)*(\S+)", re.M)
KERNEL = re.compile(r"^kernel\s+(\S+)(.*)$", re.M)
INITRD = re.compile(r"^initrd\s+(?:--name\s+\S+\s+)?(\S+)", re.M)
READY_ENV = re.compile(r"PXESERVER_READY_URL=(\S+)")
TOKEN_ENV = re.compile(r"PXESERVER_TOKEN=(\S+)")
READY_CURL = re.compile(r'Authorization: Bearer ([^"\s]+)"\s+(\S+/ready)\b')


def ready_of(cloud_config: str) -> tuple[str, str]:
    """(ready URL, token) as the shipped units read them from the cloud-config."""
    url, token = READY_ENV.search(cloud_config), TOKEN_ENV.search(cloud_config)
    if url and token:
        return url.group(1), token.group(1)
    curl = READY_CURL.search(cloud_config)
    if curl:
        return curl.group(2), curl.group(1)
    raise StepError("cloud-config", "no ready URL and token in the cloud-config")


def identity(mac_base: int, index: int) -> tuple[str, bytes, bytes, str]:
    """Machine ``index``'s MAC (text, bytes) and SMBIOS UUID (bytes, text)."""
    mac = (mac_base + index).to_bytes(6, "big")
    uuid = hashlib.md5(mac).digest()
    return ":".join(f"{b:02x}" for b in mac), mac, uuid, str(uuidlib.UUID(bytes=uuid))


async def machine(spec: Spec, port: DhcpPort, index: int, r: Result, t0: float) -> None:
    _, mac, uuid, uuid_text = identity(spec.mac_base, index)
    base = f"http://{spec.server}:{spec.http_port}"
    step = "dhcp"

    def mark(name: str) -> None:
        nonlocal last
        now = time.monotonic()
        r.steps[name] = now - last
        last = now

    r.start = time.monotonic() - t0
    last = time.monotonic()
    try:
        ip = machine_ip(index)
        boot_file = await dhcp_step(port, spec, mac, uuid, (index << 8) | 0x1000_0000, r, ip)
        mark("dhcp")
        step = "tftp"
        await tftp_step(spec, boot_file, r, ip)
        mark("tftp")
        step = "boot.ipxe"
        chain = (await http(step, "GET", f"{base}/boot.ipxe", source=ip)).decode()
        found = CHAIN.search(chain)
        if not found:
            raise StepError(step, "no chain line in /boot.ipxe")
        url = (found.group(1).replace("${netX/mac}", r.mac).replace("${uuid}", uuid_text)
               .replace("${buildarch}", "i386").replace("${platform}", "pcbios")
               .replace("${netX/ip}", ip))  # fmt: skip
        mark("boot.ipxe")
        step = "ipxe"
        script = (await http(step, "GET", url, source=ip)).decode()
        kernel, initrd = KERNEL.search(script), INITRD.search(script)
        cc = re.search(r"cloud-config-url=(\S+)", kernel.group(2)) if kernel else None
        if not (kernel and initrd and cc):
            raise StepError(step, f"no kernel, initrd or cloud-config-url in {script[:300]!r}")
        mark("ipxe")
        step = "kernel"
        await http(step, "GET", kernel.group(1), expect_size=spec.kernel_size, source=ip)
        mark("kernel")
        step = "initrd"
        await http(step, "GET", initrd.group(1), expect_size=spec.initrd_size, source=ip)
        mark("initrd")
        step = "cloud-config"
        ready_url, token = ready_of((await http(step, "GET", cc.group(1), source=ip)).decode())
        mark("cloud-config")
        step = "ready"
        await http(step, "POST", ready_url, {"Authorization": f"Bearer {token}"}, source=ip)
        mark("ready")
        r.end = time.monotonic() - t0
    except StepError as exc:
        r.error, r.error_step = str(exc), exc.step
    except Exception as exc:  # noqa: BLE001 - a surprise counts against its step, never lost
        r.error, r.error_step = f"{step}: {type(exc).__name__}: {exc}", step


async def storm(spec: Spec) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, spec.device.encode())
    sock.bind(("0.0.0.0", 68))
    port = DhcpPort(sock)
    results = [Result(identity(spec.mac_base, i)[0]) for i in range(spec.n)]
    t0 = time.monotonic()
    tasks = []
    for i, r in enumerate(results):
        if spec.mode == "waves" and i and i % spec.wave == 0:
            await asyncio.sleep(max(0.0, t0 + (i // spec.wave) * spec.interval - time.monotonic()))
        tasks.append(asyncio.ensure_future(machine(spec, port, i, r, t0)))
    await asyncio.gather(*tasks)
    wall = time.monotonic() - t0
    port.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": wall,
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
        "machines": [r.__dict__ for r in results],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="simulated PXE machines (see bench/storm.py)")
    ap.add_argument("--spec", required=True, help="the storm as JSON (bench.storm writes it)")
    args = ap.parse_args(argv)
    spec = Spec.from_json(args.spec)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    out = asyncio.run(storm(spec))
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
