"""What machines fetch while they boot: the chain script, their iPXE script, their cloud-config.

The query's rules are here, as plain functions of the query and the address the request
came from: the Flask views below use them, and so does the RSGI entrance that serves
these paths in ``serve`` (:mod:`pxeserver.web.entrance`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Set

from flask import Blueprint, Response, request

from ..errors import InvalidInput
from ..model import KNOWN_ARCHES, KNOWN_PLATFORMS, MAC, Machine, parse_uuid
from .context import base_url, service
from .files import remember_client

log = logging.getLogger(__name__)
bp = Blueprint("boot", __name__)

IPXE_TYPE = "text/plain"  # Flask adds "; charset=utf-8" to text/ types (the RSGI entrance too)
CLOUD_CONFIG_TYPE = "text/cloud-config"


def mac_of(args: Mapping[str, str]) -> MAC:
    """The machine's MAC address from the query (``mac=``); InvalidInput if missing or bad."""
    text = args.get("mac")
    if not text:
        raise InvalidInput("the query needs mac=<MAC address>, e.g. mac=52:54:00:12:34:56")
    return MAC.parse(text)


def _optional(args: Mapping[str, str], mac: MAC, name: str, allowed: Set[str]) -> str | None:
    """An optional fact from firmware. Garbage is dropped, not fatal: the machine must boot."""
    value = args.get(name, "").strip().lower()
    if not value:
        return None
    if value not in allowed:
        log.warning(
            "%s: ignoring %s=%r (expected one of %s)", mac, name, value[:20], sorted(allowed)
        )
        return None
    return value


def _uuid(args: Mapping[str, str], mac: MAC) -> str | None:
    text = args.get("uuid")
    found = _uuids.get(text) if text else None
    if found is not None:
        return found
    try:
        found = parse_uuid(text)
    except InvalidInput as exc:
        log.warning("%s: ignoring uuid: %s", mac, exc)
        return None
    if text and found is not None:
        _keep(_uuids, text, found)
    return found


def source_ip(mac: MAC, remote: str | None) -> str | None:
    """The address the request came from, whatever its query says: a booted OS fetching
    its own cloud-config comes from the address it has."""
    return _address(mac, remote)


# Addresses and UUIDs already parsed, each in their own: the text as it came (the
# request's remote address, a query's ip=; its uuid=) → its normalised form. Plain
# addresses and good UUIDs only (garbage is parsed, and warned about, each time); emptied
# when full, so that a client sending a new ip= each time cannot grow them.
MAX_PARSED = 4096
_parsed: dict[str, str] = {}  # addresses
_uuids: dict[str, str] = {}


def _address(mac: MAC, *candidates: str | None) -> str | None:
    """The first candidate that is a plain IP address.

    A plain address only: Python's ``ipaddress`` accepts an IPv6 scope ID (``fe80::1%eth0``)
    holding any character but ``/`` (newlines and quotes included), and a scope ID means
    nothing to another machine, so such an address is dropped like other garbage.
    """
    for text in candidates:
        if not text:
            continue
        plain = _parsed.get(text)
        if plain is not None:
            return plain
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            log.warning("%s: ignoring ip=%r, not an IP address", mac, text[:45])
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            log.warning("%s: ignoring ip=%r, an address with a scope ID (%%…)", mac, text[:45])
            continue
        plain = str(address)
        _keep(_parsed, text, plain)
        return plain
    return None


def _keep(kept: dict[str, str], text: str, parsed: str) -> None:
    if len(kept) >= MAX_PARSED:
        kept.clear()
    kept[text] = parsed


def machine_of(args: Mapping[str, str], remote: str | None) -> Machine:
    """The machine asking for its iPXE script, from its query (what iPXE knows about it:
    ``mac``, ``uuid``, ``arch``, ``platform``, ``ip``, the address iPXE reports, else the
    one the request came from) and the address it came from."""
    mac = mac_of(args)
    return Machine(
        mac=mac,
        uuid=_uuid(args, mac),
        arch=_optional(args, mac, "arch", KNOWN_ARCHES),
        platform=_optional(args, mac, "platform", KNOWN_PLATFORMS),
        ip=_address(mac, args.get("ip"), remote),
    )


@bp.get("/boot.ipxe")
def chain() -> Response:
    return Response(service().chain_script(base_url()), mimetype=IPXE_TYPE)


@bp.get("/ipxe")
def ipxe() -> Response:
    machine = machine_of(request.args, request.remote_addr)
    remember_client(request.remote_addr, machine.mac)  # for a 404 on its kernel next
    script = service().ipxe_script(machine, base_url(), source_ip(machine.mac, request.remote_addr))
    return Response(script, mimetype=IPXE_TYPE)


@bp.get("/cloud-config")
def cloud_config() -> Response:
    mac = mac_of(request.args)
    # Once per boot, for the secret= of the URL its script gave (pxeserver.fetchsecret).
    ip, secret = source_ip(mac, request.remote_addr), request.args.get("secret")
    text = service().cloud_config(mac, base_url(), ip, secret)
    return Response(text, mimetype=CLOUD_CONFIG_TYPE)  # charset added by Flask


@bp.get("/ignition")
def ignition() -> Response:
    mac = mac_of(request.args)
    ip, secret = source_ip(mac, request.remote_addr), request.args.get("secret")
    text = service().ignition(mac, base_url(), ip, secret)
    return Response(text, mimetype="application/vnd.coreos.ignition+json")
