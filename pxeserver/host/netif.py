"""The server's own addresses (netifaces), and what a socket bound to them needs: a receive
buffer a rack's burst fits in, and one sentence when it cannot be bound."""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket

import netifaces

from ..errors import PxeError
from .claims import PortTaken

log = logging.getLogger(__name__)


# A rack powered on together sends hundreds of DISCOVERs (and then read requests) within
# milliseconds. The kernel's default receive buffer (212992 bytes) holds about 150 such
# datagrams; the rest are dropped and the firmware asks again only after 4 s (PXE 2.1).
# 4 MiB holds a few thousand (docs/BENCHMARKS.md, "Boot storm").
UDP_RECEIVE_BUFFER = 4 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; beyond net.core.rmem_max


def enlarge_receive_buffer(sock: socket.socket, size: int = UDP_RECEIVE_BUFFER) -> int:
    """Ask for a ``size`` receive buffer on ``sock``: past ``net.core.rmem_max`` when we may
    (root or CAP_NET_ADMIN), else up to that limit. Returns the size the kernel granted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) // 2  # it doubles
    if granted < size:
        log.debug(
            "UDP receive buffer: %d bytes granted of %d asked (raise net.core.rmem_max for "
            "more)", granted, size,
        )  # fmt: skip
    return granted


def interface_address(name: str) -> str:
    """The first IPv4 address of interface ``name``; PxeError that says what exists if none."""
    if name not in netifaces.interfaces():
        known = ", ".join(netifaces.interfaces())
        raise PxeError(f"no network interface {name!r}; the interfaces are: {known}")
    for entry in netifaces.ifaddresses(name).get(netifaces.AF_INET, []):
        if entry.get("addr"):
            return str(entry["addr"])
    raise PxeError(f"interface {name!r} has no IPv4 address; give it one or use --listen")


def interface_of(address: str) -> str | None:
    """The interface that holds ``address``, or None (0.0.0.0, or not ours)."""
    for name in netifaces.interfaces():
        for entry in netifaces.ifaddresses(name).get(netifaces.AF_INET, []):
            if entry.get("addr") == address:
                return str(name)
    return None


def address_of_index(index: int) -> str | None:
    """The first IPv4 address of the interface with kernel index ``index``."""
    try:
        import socket

        name = socket.if_indextoname(index)
    except OSError:
        return None
    for entry in netifaces.ifaddresses(name).get(netifaces.AF_INET, []):
        if entry.get("addr"):
            return str(entry["addr"])
    return None


def own_addresses() -> frozenset[str]:
    """Every address of this host's interfaces, IPv4 and IPv6 (without a scope ID)."""
    found = set()
    for name in netifaces.interfaces():
        for family in (netifaces.AF_INET, netifaces.AF_INET6):
            for entry in netifaces.ifaddresses(name).get(family, []):
                text = str(entry.get("addr") or "").partition("%")[0]
                if text:
                    found.add(str(ipaddress.ip_address(text)))
    return frozenset(found)


def connected_network(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network of one of this host's interfaces that holds ``address`` (a machine on a
    link of ours), or None."""
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        return None
    family = netifaces.AF_INET if wanted.version == 4 else netifaces.AF_INET6
    for name in netifaces.interfaces():
        for entry in netifaces.ifaddresses(name).get(family, []):
            own = str(entry.get("addr") or "").partition("%")[0]
            mask = str(entry.get("netmask") or "").partition("/")[0]
            try:  # IPv4 masks are dotted; IPv6 ones a mask address (ffff:…::) too
                bits = bin(int(ipaddress.ip_address(mask))).count("1")
                network = ipaddress.ip_network(f"{own}/{bits}", strict=False)
            except ValueError:
                continue
            if wanted in network and not network.is_loopback and network.prefixlen > 0:
                return network
    return None


def address_towards(peer: str) -> str | None:
    """The address of ours that the kernel would send from to reach ``peer`` (a route
    lookup: connecting a UDP socket sends nothing), or None if there is no route."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(peer).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((peer, 9))
            return str(probe.getsockname()[0]).partition("%")[0]
    except (OSError, ValueError):
        return None


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


PRIVILEGED_HINT = "run as root (then --user to drop privileges) or use --tftp-port 6969 --no-dhcp"


def bind_error(service: str, address: str, port: int, exc: OSError, flag: str) -> PxeError:
    """One sentence for a socket that could not be bound, naming the port and what to do
    (``flag``: the option that chooses another port)."""
    where = f"cannot bind {service} to {address}:{port}"
    if isinstance(exc, PermissionError) and port < 1024:
        return PxeError(f"{where}: port {port} needs root; {PRIVILEGED_HINT}")
    if isinstance(exc, PortTaken):
        who, stop = ("another pxeserver", "stop it")
        if exc.pid is not None:
            who, stop = (f"the pxeserver with PID {exc.pid}", f"stop it (kill {exc.pid})")
        return PxeError(f"{where}: {who} serves port {port}; {stop} or choose another port "
                        f"with {flag}")  # fmt: skip
    if exc.errno == errno.EADDRINUSE:
        return PxeError(
            f"{where}: port {port} is in use by another program (`ss -lntup 'sport = "
            f":{port}'` names it); stop it or choose another port with {flag}"
        )
    return PxeError(f"{where}: {exc.strerror or exc}; choose another address or {flag}")
