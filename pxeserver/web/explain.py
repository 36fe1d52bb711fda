"""Why a machine boots what it boots: the group verdicts and what it would be served.

``GET /api/v1/nodes/<mac>/explain`` is ``pxeserver render`` over HTTP for a node in the
registry, for the node page:
the decision (which group matched and why, every other group's verdict) and the iPXE
script, cloud-config and Ignition config rendered exactly as the machine would get them,
without recording anything. The node's own token (which its cloud-config carries) is
shown only to a request that presents the API token. ``GET /api/v1/info`` tells the page
what this server has: profiles, groups, states, and who may change nodes.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .. import __version__
from ..errors import InvalidInput
from ..model import KNOWN_ARCHES, KNOWN_PLATFORMS, MAC, Machine, State
from ..profiles import Verdict
from .context import (
    base_url,
    may_write_without_token,
    operator_authorized,
    service,
    settings,
    write_policy,
)

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
    why = service().explain(machine, base_url())
    node, preview = why.node, why.preview
    show_token = operator_authorized() and preview is not None

    def shown(text: str | None) -> str | None:
        if text is None or show_token:
            return text
        return text.replace(node.token, HIDDEN)

    decision = preview.decision if preview else None
    group = decision.group.name if decision and decision.group else None
    return jsonify(
        mac=node.mac.value,
        known=True,
        hostname=node.hostname,
        state=node.state.value,
        arch=node.arch,
        platform=node.platform,
        profile=decision.profile if decision else None,
        group=group,
        reason=why.reason,
        verdicts=_verdicts(why.verdicts, group),
        ipxe=shown(preview.ipxe) if preview else None,
        cloud_config=shown(preview.cloud_config) if preview else None,
        ignition=shown(preview.ignition) if preview else None,
        token_hidden=not show_token,
        boot_from_disk=preview.boot.from_disk if preview and preview.boot else None,
        boot_why=preview.boot.why if preview and preview.boot else None,
    )


def _verdicts(verdicts: Sequence[Verdict], chosen: str | None) -> list[dict[str, Any]]:
    groups = {g.name: g for g in settings().groups}
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


@bp.get("/info")
def info() -> Response:
    current = settings()
    return jsonify(
        version=__version__,
        # For this request: whether its client must give a token to change nodes, and
        # the server's rule (token, loopback: this machine only, or anyone).
        writes_need_token=not may_write_without_token(),
        writes=write_policy(),
        profiles=sorted(current.profiles),
        groups=[
            {
                "name": g.name,
                "profile": g.profile,
                "selectors": {k: list(v) for k, v in g.selectors.items()},
            }
            for g in current.groups
        ],
        states=[s.value for s in State],
    )
