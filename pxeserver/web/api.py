"""The node API: operators list, inspect and steer nodes; nodes phone home.

Reads are open. Operator writes (PATCH, DELETE) need ``Authorization: Bearer <api_token>``
when the settings name a token, and come from this machine otherwise (see
:mod:`.security`, which guards them before the view runs). ``ready`` and ``heartbeat``
need the node's own token, issued in its cloud-config, as ``Authorization: Bearer
<token>`` or a ``token`` field in a form or JSON body.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .. import timeline
from ..errors import InvalidInput
from ..model import MAC, UNSET, EventKind, Node, State
from . import listing
from .context import bearer, service, settings
from .security import node_call
from .validate import check_patch

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return (
        datetime.fromtimestamp(ts, timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def node_json(node: Node, *, events: bool) -> dict[str, Any]:
    """A node as the API shows it: no token, times in ISO 8601 UTC."""
    profile, source = service().effective_profile(node)
    d: dict[str, Any] = {
        "mac": node.mac.value,
        "hostname": node.hostname,
        "uuid": node.uuid,
        "arch": node.arch,
        "platform": node.platform,
        "ip": node.ip,
        "profile": profile,
        "profile_source": source,
        "assigned_profile": node.profile,
        "labels": dict(node.labels),
        "state": node.state.value,
        "first_seen": iso(node.first_seen),
        "last_seen": iso(node.last_seen),
        "last_heartbeat": iso(node.last_heartbeat),
        "boot_count": node.boot_count,
        "installed": node.installed,
        "installed_at": iso(node.installed_at),
    }
    if events:
        took = timeline.durations(node.events)
        d["events"] = [
            {
                "kind": e.kind.value,
                "at": iso(e.at),
                "state": e.state.value,
                "detail": e.detail,
                "count": e.count,
                "took": None if t is None else round(t, 3),  # seconds since the previous step
            }
            for e, t in zip(node.events, took)
        ]
    return d


@bp.get("/nodes")
def list_nodes() -> Response:
    state = None
    if "state" in request.args:
        try:
            state = State(request.args["state"])
        except ValueError:
            raise InvalidInput(
                f"state={request.args['state'][:20]!r} is unknown; expected one of "
                + ", ".join(s.value for s in State)
            ) from None
    wanted: dict[str, str] = {}
    for text in request.args.getlist("label"):
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise InvalidInput(f"label={text[:40]!r}: write label=key=value")
        wanted[key] = value
    page = listing.page_of(request.args)
    everyone = service().nodes()
    found = service().nodes(
        state=state, profile=request.args.get("profile"), labels=wanted, among=everyone
    )
    rows, count = listing.arrange(found, page, lambda n: service().effective_profile(n)[0])
    return jsonify(
        nodes=[node_json(n, events=False) for n in rows],
        count=count,
        offset=page.offset,
        limit=page.limit,
        by_state=listing.by_state(everyone),
    )


@bp.get("/nodes/<mac>")
def show_node(mac: str) -> Response:
    node = service().node(MAC.parse(mac))
    return jsonify(node_json(node, events=True))


@bp.patch("/nodes/<mac>")
def patch_node(mac: str) -> Response:
    address = MAC.parse(mac)
    # Validated against the NodePatch schema the OpenAPI document shows (web/validate.py).
    body = check_patch(request.get_json(silent=True), sorted(settings().profiles))
    profile = body.get("profile", UNSET)
    labels = body.get("labels")
    hostname = body.get("hostname")
    reinstall = body.get("reinstall", False)
    node = service().set_node(
        address, profile=profile, labels=labels, hostname=hostname, reinstall=reinstall
    )
    return jsonify(node_json(node, events=True))


@bp.delete("/nodes/<mac>")
def delete_node(mac: str) -> Response:
    service().forget(MAC.parse(mac))
    return Response(status=204)


def _node_token() -> str | None:
    token = bearer()
    if token:
        return token
    body = request.get_json(silent=True)
    if isinstance(body, dict) and isinstance(body.get("token"), str):
        return body["token"]
    return request.form.get("token") or None


@bp.post("/nodes/<mac>/ready")
@node_call
def ready(mac: str) -> Response:
    node = service().phone_home(MAC.parse(mac), _node_token(), EventKind.READY)
    return jsonify(mac=node.mac.value, hostname=node.hostname, state=node.state.value)


@bp.post("/nodes/<mac>/heartbeat")
@node_call
def heartbeat(mac: str) -> Response:
    node = service().phone_home(MAC.parse(mac), _node_token(), EventKind.HEARTBEAT)
    return jsonify(mac=node.mac.value, hostname=node.hostname, state=node.state.value)
