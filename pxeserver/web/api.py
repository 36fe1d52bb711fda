"""The node API: operators list, inspect and steer nodes; nodes phone home.

Reads are open. Operator writes (PATCH, DELETE) need ``Authorization: Bearer <api_token>``
when the settings name a token. ``ready`` and ``heartbeat`` need the node's own token,
issued in its cloud-config, as ``Authorization: Bearer <token>`` or a ``token`` field in a
form or JSON body.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .. import timeline
from ..errors import InvalidInput
from ..model import MAC, UNSET, EventKind, Node, State, label_name_problem, label_value_problem
from . import listing
from .context import bearer, require_operator, service

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


def _labels(raw: Any, *, allow_none: bool) -> dict[str, str | None]:
    if not isinstance(raw, dict):
        raise InvalidInput('labels must be an object such as {"rack": "r1"}')
    labels: dict[str, str | None] = {}
    for key, value in raw.items():
        name_problem = label_name_problem(key)
        if name_problem:
            raise InvalidInput(name_problem)
        if value is None and allow_none:
            labels[key] = None
        elif isinstance(value, (str, int)) and not isinstance(value, bool):
            text = str(value)
            problem = label_value_problem(text)
            if problem:
                raise InvalidInput(f"label {key}: {problem}")
            labels[key] = text
        else:
            raise InvalidInput(f"label {key}: the value must be a string (or null to remove it)")
    return labels


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
    require_operator()
    address = MAC.parse(mac)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput(
            'send a JSON object, e.g. {"profile": "flatcar", "labels": {"rack": "r1"}}'
        )
    unknown = set(body) - {"profile", "labels", "hostname", "reinstall"}
    if unknown:
        raise InvalidInput(
            f"unknown fields {sorted(unknown)}; use profile, labels, hostname, reinstall"
        )
    profile: object = UNSET
    if "profile" in body:
        if body["profile"] is not None and not isinstance(body["profile"], str):
            raise InvalidInput("profile must be a profile name, or null to go back to the groups")
        profile = body["profile"]
    labels = _labels(body["labels"], allow_none=True) if "labels" in body else None
    hostname = body.get("hostname")
    if hostname is not None and not isinstance(hostname, str):
        raise InvalidInput("hostname must be a string")
    reinstall = body.get("reinstall", False)
    if not isinstance(reinstall, bool):
        raise InvalidInput("reinstall must be true (install again at the next boot) or false")
    node = service().set_node(
        address, profile=profile, labels=labels, hostname=hostname, reinstall=reinstall
    )
    return jsonify(node_json(node, events=True))


@bp.delete("/nodes/<mac>")
def delete_node(mac: str) -> Response:
    require_operator()
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
def ready(mac: str) -> Response:
    node = service().phone_home(MAC.parse(mac), _node_token(), EventKind.READY)
    return jsonify(mac=node.mac.value, hostname=node.hostname, state=node.state.value)


@bp.post("/nodes/<mac>/heartbeat")
def heartbeat(mac: str) -> Response:
    node = service().phone_home(MAC.parse(mac), _node_token(), EventKind.HEARTBEAT)
    return jsonify(mac=node.mac.value, hostname=node.hostname, state=node.state.value)
