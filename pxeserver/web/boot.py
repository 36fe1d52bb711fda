"""What machines fetch while they boot: the chain script, their iPXE script, their cloud-config."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Set

from flask import Blueprint, Response, request

from ..errors import InvalidInput
from ..model import KNOWN_ARCHES, KNOWN_PLATFORMS, MAC, Machine, parse_uuid
from .context import base_url, service
from .files import remember_client

log = logging.getLogger(__name__)
bp = Blueprint("boot", __name__)

IPXE_TYPE = "text/plain"  # Flask adds "; charset=utf-8" to text/ types


def _mac() -> MAC:
    text = request.args.get("mac")
    if not text:
        raise InvalidInput("the query needs mac=<MAC address>, e.g. mac=52:54:00:12:34:56")
    return MAC.parse(text)


def _optional(mac: MAC, name: str, allowed: Set[str]) -> str | None:
    """An optional fact from firmware. Garbage is dropped, not fatal: the machine must boot."""
    value = request.args.get(name, "").strip().lower()
    if not value:
        return None
    if value not in allowed:
        log.warning(
            "%s: ignoring %s=%r (expected one of %s)", mac, name, value[:20], sorted(allowed)
        )
        return None
    return value


def _uuid(mac: MAC) -> str | None:
    try:
        return parse_uuid(request.args.get("uuid"))
    except InvalidInput as exc:
        log.warning("%s: ignoring uuid: %s", mac, exc)
        return None


def _ip(mac: MAC) -> str | None:
    """The address the machine reports (iPXE's ``${netX/ip}``), else the one it came from.

    A plain address only: Python's ``ipaddress`` accepts an IPv6 scope ID (``fe80::1%eth0``)
    holding any character but ``/`` (newlines and quotes included), and a scope ID means
    nothing to another machine, so such an address is dropped like other garbage.
    """
    return _address(mac, request.args.get("ip"), request.remote_addr)


def _source_ip(mac: MAC) -> str | None:
    """The address the request came from, whatever its query says: a booted OS fetching
    its own cloud-config comes from the address it has."""
    return _address(mac, request.remote_addr)


def _address(mac: MAC, *candidates: str | None) -> str | None:
    """The first candidate that is a plain IP address (see :func:`_ip`)."""
    for text in candidates:
        if not text:
            continue
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            log.warning("%s: ignoring ip=%r, not an IP address", mac, text[:45])
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            log.warning("%s: ignoring ip=%r, an address with a scope ID (%%…)", mac, text[:45])
            continue
        return str(address)
    return None


def _machine() -> Machine:
    mac = _mac()
    return Machine(
        mac=mac,
        uuid=_uuid(mac),
        arch=_optional(mac, "arch", KNOWN_ARCHES),
        platform=_optional(mac, "platform", KNOWN_PLATFORMS),
        ip=_ip(mac),
    )


@bp.get("/boot.ipxe")
def chain() -> Response:
    return Response(service().chain_script(base_url()), mimetype=IPXE_TYPE)


@bp.get("/ipxe")
def ipxe() -> Response:
    machine = _machine()
    remember_client(request.remote_addr, machine.mac)  # for a 404 on its kernel next
    script = service().ipxe_script(machine, base_url(), _source_ip(machine.mac))
    return Response(script, mimetype=IPXE_TYPE)


@bp.get("/cloud-config")
def cloud_config() -> Response:
    mac = _mac()
    # Once per boot, for the secret= of the URL its script gave (pxeserver.fetchsecret).
    text = service().cloud_config(mac, base_url(), _source_ip(mac), request.args.get("secret"))
    return Response(text, mimetype="text/cloud-config")  # charset added by Flask


@bp.get("/ignition")
def ignition() -> Response:
    mac = _mac()
    text = service().ignition(mac, base_url(), _source_ip(mac), request.args.get("secret"))
    return Response(text, mimetype="application/vnd.coreos.ignition+json")
