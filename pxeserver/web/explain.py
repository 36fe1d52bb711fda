"""Why a machine boots what it boots: the group verdicts and what it would be served.

``GET /api/v1/nodes/<mac>/explain`` is ``pxeserver render`` over HTTP for a node in the
registry, for the node page:
the decision (which group matched and why, every other group's verdict) and the iPXE
script, cloud-config and Ignition config rendered exactly as the machine would get them,
without recording anything. The node's own token (which its cloud-config carries) is
shown only to a request that presents the API token. ``GET /api/v1/info`` tells the page
what this server has: profiles, groups, states, and whether writes need a token.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .. import __version__
from ..boot import NoMatch
from ..config import Settings
from ..errors import InvalidInput
from ..model import KNOWN_ARCHES, KNOWN_PLATFORMS, MAC, Machine, Node, State
from ..profiles import Verdict, machine_facts, verdicts
from . import base_url, service
from .api import operator_authorized

bp = Blueprint("explain", __name__, url_prefix="/api/v1")

HIDDEN = "<node token: hidden; give the API token to see it>"


def _fact(name: str, allowed: Set[str]) -> str | None:
    value = request.args.get(name, "").strip().lower()
    if not value:
        return None
    if value not in allowed:
        raise InvalidInput(f"{name}={value[:20]!r} is unknown; use one of {sorted(allowed)}")
    return value


@bp.get("/nodes/<mac>/explain")
def explain(mac: str) -> Response:
    machine = Machine(
        MAC.parse(mac),
        arch=_fact("arch", KNOWN_ARCHES),
        platform=_fact("platform", KNOWN_PLATFORMS),
    )
    # Only nodes in the registry: `pxeserver render --mac` previews machines not seen yet.
    service().registry.require(machine.mac)
    try:
        preview = service().preview(machine, base_url())
    except NoMatch as exc:
        return _no_match(machine, str(exc))
    node = preview.node
    show_token = operator_authorized()

    def shown(text: str | None) -> str | None:
        if text is None or show_token:
            return text
        return text.replace(node.token, HIDDEN)

    decision = preview.decision
    return jsonify(
        mac=node.mac.value,
        known=preview.known,
        hostname=node.hostname,
        state=node.state.value if preview.known else None,
        arch=node.arch,
        platform=node.platform,
        profile=decision.profile,
        group=decision.group.name if decision.group else None,
        reason=decision.reason,
        verdicts=_verdicts(decision.verdicts, decision.group.name if decision.group else None),
        ipxe=shown(preview.ipxe),
        cloud_config=shown(preview.cloud_config),
        ignition=shown(preview.ignition),
        token_hidden=not show_token,
        boot_from_disk=preview.boot.from_disk if preview.boot else None,
        boot_why=preview.boot.why if preview.boot else None,
    )


def _verdicts(verdicts: Sequence[Verdict], chosen: str | None) -> list[dict[str, Any]]:
    settings: Settings = current_app.extensions["pxeserver.settings"]
    groups = {g.name: g for g in settings.groups}
    out = []
    for v in verdicts:
        group = groups.get(v.group)
        out.append(
            {
                "group": v.group,
                "profile": group.profile if group else None,
                "selectors": {k: list(vs) for k, vs in group.selectors.items()} if group else {},
                "matched": v.matched,
                "chosen": v.group == chosen,
                "why": v.why,
            }
        )
    return out


def _no_match(machine: Machine, message: str) -> Response:
    """Nothing selects the machine: still show every group's verdict, which says why."""
    settings: Settings = current_app.extensions["pxeserver.settings"]
    existing = service().registry.get(machine.mac)
    node = existing or Node(mac=machine.mac)
    facts = machine_facts(
        mac=node.mac.value,
        uuid=node.uuid,
        arch=machine.arch or node.arch,
        platform=machine.platform or node.platform,
        hostname=node.hostname,
        labels=node.labels,
    )
    return jsonify(
        mac=node.mac.value,
        known=existing is not None,
        hostname=node.hostname,
        state=node.state.value if existing else None,
        arch=machine.arch or node.arch,
        platform=machine.platform or node.platform,
        profile=None,
        group=None,
        reason=message,
        verdicts=_verdicts(verdicts(settings.groups, facts), None),
        ipxe=None,
        cloud_config=None,
        ignition=None,
        token_hidden=True,
        boot_from_disk=None,
        boot_why=None,
    )


@bp.get("/info")
def info() -> Response:
    settings: Settings = current_app.extensions["pxeserver.settings"]
    return jsonify(
        version=__version__,
        writes_need_token=settings.server.api_token is not None,
        profiles=sorted(settings.profiles),
        groups=[
            {
                "name": g.name,
                "profile": g.profile,
                "selectors": {k: list(v) for k, v in g.selectors.items()},
            }
            for g in settings.groups
        ],
        states=[s.value for s in State],
    )
