"""TFTP clients for tests: curl (tftp://) and a raw client that sends exactly the bytes a
test wants."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from pxeserver.tftp import packets as tp

CURL = shutil.which("curl") or "curl"


def need(tool: str) -> None:
    if not os.access(tool, os.X_OK) and shutil.which(tool) is None:
        raise RuntimeError(f"{tool} is missing: scripts/setup test installs it from Debian")


def curl(port: int, name: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    need(CURL)
    return subprocess.run([CURL, "-s", "--max-time", "60", *args,
                           f"tftp://127.0.0.1:{port}/{name}"], capture_output=True,
                          timeout=90, check=False)  # fmt: skip


def fetch(port: int, name: str) -> bytes:
    """The file ``name`` from the TFTP server on ``port``; CalledProcessError if curl fails."""
    out = curl(port, name)
    out.check_returncode()
    return out.stdout


class RawClient:
    """A TFTP client that sends exactly the bytes a test wants."""

    def __init__(self, port: int) -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2)
        self.peer: tuple[str, int] | None = None

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.peer or self.server)

    def recv(self, timeout: float = 2.0) -> tp.Packet | tp.Request | None:
        self.sock.settimeout(timeout)
        try:
            data, self.peer = self.sock.recvfrom(70000)
        except TimeoutError:
            return None
        if data[:2] == b"\x00\x06":
            return tp.Request(tp.OACK, "", "", dict(_pairs(data[2:])))
        packet = tp.parse(data)
        if isinstance(packet, tp.Error):
            self.peer = None  # that transfer is over; a new request goes to the server port
        return packet

    def waiting(self) -> list[bytes]:
        """What has arrived and not been read, without waiting. Read after an event that
        ends what the server may send (the transfer ended), it is everything it sent: a
        silence that is a fact, not a timeout."""
        found = []
        self.sock.setblocking(False)
        try:
            while True:
                found.append(self.sock.recv(70000))
        except BlockingIOError:
            return found
        finally:
            self.sock.settimeout(2)

    def close(self) -> None:
        self.sock.close()


def _pairs(body: bytes) -> list[tuple[str, str]]:
    fields = body.rstrip(b"\0").split(b"\0")
    return [(fields[i].decode(), fields[i + 1].decode()) for i in range(0, len(fields) - 1, 2)]
