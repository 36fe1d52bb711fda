"""What every blueprint asks of the application it runs in: the boot policy, the settings,
the base URL machines reach us at, and whether the caller is an operator.

The application never touches the registry or the store: it asks the boot policy, typed
here as :class:`WebBoot` (as ProxyDHCP and TFTP type theirs), for everything it shows or
changes.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Protocol

from flask import current_app, request

from ..boot import Explanation
from ..config import Settings
from ..errors import Forbidden
from ..model import MAC, EventKind, Machine, Node, State


class WebBoot(Protocol):
    """What the HTTP side asks the boot policy (:class:`pxeserver.boot.BootService`)."""

    def chain_script(self, base: str) -> str: ...

    def ipxe_script(self, machine: Machine, base: str) -> str: ...

    def ipxe_script_from_memory(self, machine: Machine, base: str) -> str | None: ...

    def cloud_config(self, mac: MAC, base: str, ip: str | None = None) -> str: ...

    def cloud_config_from_memory(
        self, mac: MAC, base: str, ip: str | None = None
    ) -> str | None: ...

    def ignition(self, mac: MAC, base: str) -> str: ...

    def phone_home(self, mac: MAC, token: str | None, kind: EventKind) -> Node: ...

    def node(self, mac: MAC) -> Node: ...

    def nodes(
        self,
        *,
        state: State | None = None,
        profile: str | None = None,
        labels: Mapping[str, str] | None = None,
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


def base_url() -> str:
    """How the asking machine reaches us: the configured base URL, else the Host it used."""
    return settings().server.base_url or request.host_url.rstrip("/")


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


def require_operator() -> None:
    """Raise Forbidden unless the request carries the API token (when one is set)."""
    wanted = settings().server.api_token
    if wanted is None:
        return
    given = bearer()
    if given is None:
        raise Forbidden("this API call needs 'Authorization: Bearer <api token>'", missing=True)
    if not hmac.compare_digest(given.encode(), wanted.encode()):
        raise Forbidden("the API token is wrong")
