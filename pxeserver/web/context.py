"""What every blueprint asks of the application it runs in: the boot policy, the settings,
the base URL machines reach us at, and whether the caller may change nodes.

The application never touches the registry or the store: it asks the boot policy, typed
here as :class:`WebBoot` (as ProxyDHCP and TFTP type theirs), for everything it shows or
changes.

Who may change nodes (:func:`write_policy`): with ``server.api_token``, whoever sends it;
without one, this machine only (a loopback client, that names this server in ``Host`` and
came through no proxy), unless ``server.allow_unauthenticated_writes`` opens changes to
anyone. The ``Host`` check keeps a web page that DNS-rebinds its own name to this server
from counting as this machine; the proxy check keeps a reverse proxy on this host from
making everyone behind it local.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

from flask import current_app, request

from ..boot import Explanation
from ..config import Settings
from ..config.settings import ServerSettings
from ..errors import Forbidden
from ..host.netif import address_towards, is_loopback, own_addresses
from ..model import MAC, EventKind, Machine, Node, State

log = logging.getLogger(__name__)

# Headers a reverse proxy adds: a request that carries one came from further away.
FORWARDING = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
ADDRESSES_TTL_S = 10.0  # how long this host's addresses are trusted before asking again


class WebBoot(Protocol):
    """What the HTTP side asks the boot policy (:class:`pxeserver.boot.BootService`)."""

    def chain_script(self, base: str) -> str: ...

    def ipxe_script(self, machine: Machine, base: str, client: str | None = None) -> str: ...

    def ipxe_script_from_memory(
        self, machine: Machine, base: str, client: str | None = None
    ) -> str | None: ...

    def cloud_config(
        self, mac: MAC, base: str, ip: str | None = None, secret: str | None = None
    ) -> str: ...

    def cloud_config_from_memory(
        self, mac: MAC, base: str, ip: str | None = None, secret: str | None = None
    ) -> str | None: ...

    def ignition(
        self, mac: MAC, base: str, ip: str | None = None, secret: str | None = None
    ) -> str: ...

    def phone_home(self, mac: MAC, token: str | None, kind: EventKind) -> Node: ...

    def node(self, mac: MAC) -> Node: ...

    def nodes(
        self,
        *,
        state: State | None = None,
        profile: str | None = None,
        labels: Mapping[str, str] | None = None,
        among: Iterable[Node] | None = None,
    ) -> list[Node]: ...

    def effective_profile(self, node: Node) -> tuple[str | None, str]: ...

    def set_node(
        self,
        mac: MAC,
        *,
        profile: object = ...,
        labels: Mapping[str, str | None] | None = None,
        hostname: str | None = None,
        reinstall: bool = False,
    ) -> Node: ...

    def forget(self, mac: MAC) -> None: ...

    def explain(self, machine: Machine, base: str) -> Explanation: ...

    def health(self) -> str | None: ...


def service() -> WebBoot:
    boot: WebBoot = current_app.extensions["pxeserver"]
    return boot


def settings() -> Settings:
    found: Settings = current_app.extensions["pxeserver.settings"]
    return found


class _OwnAddresses:
    """This host's addresses, read again when older than ``ADDRESSES_TTL_S`` (a DHCP
    lease of the server's own may change them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._found: frozenset[str] = frozenset()

    def __contains__(self, address: str) -> bool:
        with self._lock:
            if time.monotonic() - self._read_at > ADDRESSES_TTL_S:
                self._found, self._read_at = own_addresses(), time.monotonic()
            return address in self._found


OWN_ADDRESSES = _OwnAddresses()
_WILDCARDS = ("0.0.0.0", "::")


def listed_host(s: ServerSettings, host_header: str, remote: str | None) -> str | None:
    """The ``Host`` header (as ``host[:port]``) if it names this server: ``localhost``
    or an address of this host (or ``server.base_url``'s host), or any address for a
    client on loopback (it came through a forwarder here), with the HTTP port or none;
    else None. A name nobody listed is never trusted: a web page may have rebound it to
    us."""
    text = host_header.lower()
    host, port = text, None
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if port is not None and port != str(s.http_port):
        return None  # without a port it is as the machine wrote it (a forward from 80)
    if host == "localhost" or (s.base_url and host == _host_of(s.base_url)):
        return text
    address = _address_of(host)
    if address is None:
        return None
    if address == s.listen or address in OWN_ADDRESSES:
        return text
    # An address (never a name: a name may have been rebound) that arrived over loopback:
    # the client connected to that address and a forwarder on this machine brought it here,
    # e.g. QEMU's user network (`pxeserver demo`: 10.0.2.2 is the host's loopback for the
    # VM), or a container runtime's port forward. That address is how it reaches us.
    return text if is_loopback(remote or "") else None


# The Host headers' addresses parsed already (host text → the address as ipaddress
# writes it), emptied when full: what machines send is one or two of our addresses.
MAX_HOSTS = 1024
_hosts: dict[str, str] = {}


def _address_of(host: str) -> str | None:
    """``host`` as an IP address written by ``ipaddress``, or None if it is none."""
    address = _hosts.get(host)
    if address is None:
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            return None
        if len(_hosts) >= MAX_HOSTS:
            _hosts.clear()
        _hosts[host] = address
    return address


def _host_of(url: str) -> str:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "").lower()


def base_url() -> str:
    """How the asking machine reaches us (:func:`base_url_for` this request)."""
    return base_url_for(settings().server, request.host, request.remote_addr)


def base_url_for(s: ServerSettings, host_header: str, remote: str | None) -> str:
    """How a machine that sent ``host_header`` from ``remote`` reaches us, for the URLs in
    what it is served: ``server.base_url``; else the ``Host`` it used if that names this
    server (:func:`listed_host`); else the listening address, or for a wildcard listener
    the address of ours on the route back to the machine. The Flask views and the boot
    path's own entrance (web/entrance.py) both ask here."""
    if s.base_url:
        return s.base_url
    host = listed_host(s, host_header, remote)
    if host is None:
        address = s.listen
        if address in _WILDCARDS:
            address = address_towards(remote or "") or "127.0.0.1"
        host = f"[{address}]:{s.http_port}" if ":" in address else f"{address}:{s.http_port}"
        log.debug("Host %r names no address of this server; URLs use %s (set server.base_url "
                  "to choose)", host_header[:80], host)  # fmt: skip
    return f"http://{host}"


def bearer() -> str | None:
    """The token of an ``Authorization: Bearer`` header, if there is one."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def operator_authorized() -> bool:
    """True if the request carries the configured API token (False when none is set)."""
    wanted, given = settings().server.api_token, bearer()
    if wanted is None or given is None:
        return False
    return hmac.compare_digest(given.encode(), wanted.encode())


def from_this_machine() -> bool:
    """True for a loopback client that names this server and came through no proxy."""
    if not is_loopback(request.remote_addr or ""):
        return False
    if any(name in request.headers for name in FORWARDING):
        return False
    # Without the client's address: an address that came through a forwarder here (QEMU's
    # user network, a port forward) is how a machine reaches us, not this machine.
    return listed_host(settings().server, request.host, None) is not None


def write_policy() -> str:
    """Who may change nodes: ``token`` (whoever sends server.api_token), ``loopback`` (no
    token is set: this machine only) or ``anyone`` (server.allow_unauthenticated_writes)."""
    s = settings().server
    if s.api_token is not None:
        return "token"
    return "anyone" if s.allow_unauthenticated_writes else "loopback"


def may_write_without_token() -> bool:
    """Whether this request may change nodes without presenting a token."""
    policy = write_policy()
    return policy == "anyone" or (policy == "loopback" and from_this_machine())


def require_operator() -> None:
    """Raise Forbidden unless this request may change nodes (see :func:`write_policy`)."""
    wanted = settings().server.api_token
    if wanted is None:
        if may_write_without_token():
            return
        raise Forbidden(
            "this server has no API token, so it accepts changes only from its own machine "
            "(loopback); set server.api_token and send 'Authorization: Bearer <token>', or "
            "set server.allow_unauthenticated_writes: true to accept changes from anyone"
        )
    given = bearer()
    if given is None:
        raise Forbidden("this API call needs 'Authorization: Bearer <api token>'", missing=True)
    if not hmac.compare_digest(given.encode(), wanted.encode()):
        raise Forbidden("the API token is wrong")
