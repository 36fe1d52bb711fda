"""What one running server owns on this machine: its data folder and its ports.

Two ``pxeserver serve`` on the same ports or the same data folder must not both run: they
would take turns answering the same machines from two registries, and the second would
empty the first one's metrics files. The kernel alone does not stop them, because
pxeserver shares ports on purpose: granian's HTTP workers each bind the HTTP port with
SO_REUSEPORT (the kernel spreads connections over them, and over any other process of
the same user that does the same), and ProxyDHCP binds port 67 with SO_REUSEADDR so that
the site's own DHCP server on the same machine hears the broadcasts too.

So a server claims what it owns, and releases it by ending (even killed: the kernel
closes what a process held):

- :class:`DataFolderLock`: ``flock`` on ``<data_dir>/pxeserver.lock``, which holds the
  owner's PID for the message the next one prints.
- :class:`PortClaim`: a listening Unix socket in the abstract namespace named after the
  protocol, port and address. Abstract names belong to the network namespace, as ports
  do, and the kernel tells a second claimant the owner's PID (SO_PEERCRED).

Neither is inherited by the processes a server spawns (Python opens them close-on-exec),
so a server's children never hold them after it ends.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
from pathlib import Path

from ..errors import PxeError

LOCK_NAME = "pxeserver.lock"


class DataFolderLock:
    """The data folder of one running server (the SQLite store, the etcd store's local
    cache and journal, the metrics files)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise PxeError naming the folder and the server that has it."""
        path = self.folder / LOCK_NAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PxeError(
                f"cannot use the data folder {self.folder}: {exc.strerror or exc}; "
                "fix it or give another one with --data-dir"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(fd)
            os.close(fd)
            who = f"the pxeserver with PID {owner}" if owner else "another pxeserver"
            stop = f"stop it (kill {owner})" if owner else "stop it"
            raise PxeError(
                f"the data folder {self.folder} is in use by {who}; {stop} or give this "
                "one another folder with --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or "x")
    return None


class PortClaim:
    """One pxeserver's claim on ``port`` of ``protocol`` at ``address`` (in this network
    namespace). Port 0 (the kernel picks a free one) needs no claim."""

    def __init__(self, protocol: str, address: str, port: int) -> None:
        self.protocol = protocol
        self.address = address
        self.port = port
        self.name = f"\0pxeserver/{protocol}/{address}/{port}"
        self._sock: socket.socket | None = None

    def acquire(self) -> None:
        """Claim the port, or raise :class:`PortTaken` with the owner's PID."""
        if self.port == 0 or self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.name)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortTaken(self.port, owner_pid(self.name)) from None
        # Listening lets a second claimant connect and learn our PID (SO_PEERCRED); we
        # never accept, and the backlog bounds what waiting connections can cost.
        sock.listen(128)
        self._sock = sock

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class PortTaken(OSError):
    """Another pxeserver serves this port; ``pid`` is its process (None if unknown)."""

    def __init__(self, port: int, pid: int | None) -> None:
        super().__init__(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        self.port = port
        self.pid = pid


def owner_pid(name: str) -> int | None:
    """The PID of the process listening on the abstract Unix socket ``name``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(name)
            creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
    pid, _, _ = struct.unpack("3i", creds)
    return pid or None


def check_tcp_port_free(address: str, port: int) -> None:
    """Raise OSError (EADDRINUSE) if any program listens on TCP ``address:port``.

    A socket without SO_REUSEPORT cannot share a port with a listening one, whoever owns
    it; SO_REUSEADDR lets connections of an earlier run still in TIME_WAIT pass. Nothing
    stays bound: the caller's server binds the port next.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address, port))
