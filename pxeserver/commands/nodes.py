"""``pxeserver nodes``: the client of a running server's node API, and how nodes are shown.

Everything goes through the HTTP API (the same one the node page and operators' scripts
use); an answer that is not a success becomes a :class:`~pxeserver.errors.PxeError` that
names the call, the status and the server's sentence.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any

from ..errors import InvalidInput, PxeError
from ..model import MAC

DEFAULT_SERVER = "http://127.0.0.1:8080"


class Api:
    """Calls to a running server's ``/api/v1``, with the API token when one is given."""

    def __init__(self, server: str, token: str | None, origin: str = "") -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.origin = origin  # how the server was chosen: said when it cannot be reached

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                message = exc.reason
            raise PxeError(f"{method} {path}: {exc.code} {message}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            origin = f" ({self.origin})" if self.origin else ""
            raise PxeError(
                f"cannot reach {self.server}{origin}: {reason}; is `pxeserver serve` running?"
            ) from exc
        return json.loads(raw) if raw else None

    def nodes(self, state: str | None, profile: str | None, labels: tuple[str, ...]) -> Any:
        query = []
        if state:
            query.append(f"state={state}")
        if profile:
            query.append(f"profile={urllib.parse.quote(profile)}")
        query += [f"label={urllib.parse.quote(label)}" for label in labels]
        return self.call("GET", "/api/v1/nodes" + ("?" + "&".join(query) if query else ""))["nodes"]

    def node(self, mac: str) -> Any:
        return self.call("GET", f"/api/v1/nodes/{MAC.parse(mac)}")

    def set(self, mac: str, body: dict[str, Any]) -> Any:
        return self.call("PATCH", f"/api/v1/nodes/{MAC.parse(mac)}", body)

    def forget(self, mac: str) -> str:
        address = MAC.parse(mac).value
        self.call("DELETE", f"/api/v1/nodes/{address}")
        return address


def changes(
    profile: str | None, labels: tuple[str, ...], hostname: str | None, reinstall: bool
) -> dict[str, Any]:
    """The PATCH body for ``nodes set``'s options; InvalidInput when they ask nothing."""
    body: dict[str, Any] = {}
    if profile is not None:
        body["profile"] = profile or None
    if labels:
        body["labels"] = {}
        for text in labels:
            key, sep, value = text.partition("=")
            if not sep or not key:
                raise InvalidInput(f"--label {text!r}: write KEY=VALUE (or KEY= to remove)")
            body["labels"][key] = value or None
    if hostname is not None:
        body["hostname"] = hostname
    if reinstall:
        body["reinstall"] = True
    if not body:
        raise InvalidInput("nothing to set: give --profile, --label, --hostname or --reinstall")
    return body


def ago(iso: str | None) -> str:
    if not iso:
        return "-"
    then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = int((datetime.now(timezone.utc) - then).total_seconds())
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def table(nodes: list[dict[str, Any]]) -> list[str]:
    """``nodes list``: one line a node, in columns."""
    rows = [("MAC", "HOSTNAME", "IP", "PROFILE", "STATE", "BOOTS", "LAST SEEN", "LABELS")]
    for n in nodes:
        labels_text = ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items())) or "-"
        rows.append(
            (
                n["mac"],
                n["hostname"],
                n["ip"] or "-",
                n["profile"] or "-",
                n["state"],
                str(n["boot_count"]),
                ago(n["last_seen"]),
                labels_text,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def details(n: dict[str, Any]) -> list[str]:
    """``nodes show``: one node, then its timeline."""
    lines = []
    for key in ("mac", "hostname", "ip", "uuid", "arch", "platform", "state", "boot_count"):
        lines.append(f"{key + ':':12} {n[key] if n[key] is not None else '-'}")
    lines.append(f"{'profile:':12} {n['profile'] or '-'} ({n['profile_source']})")
    if n.get("installed"):
        on_disk = f"{n['installed']} on its disk since {n['installed_at']}"
        lines.append(f"{'installed:':12} {on_disk} (boots of it start from disk)")
    else:
        lines.append(f"{'installed:':12} - (network boot)")
    labels = ", ".join(f"{k}={v}" for k, v in sorted(n["labels"].items())) or "-"
    lines.append(f"{'labels:':12} {labels}")
    lines.append(f"{'first seen:':12} {n['first_seen']}")
    lines.append(f"{'last seen:':12} {n['last_seen']} ({ago(n['last_seen'])})")
    lines.append("timeline:")
    for e in n["events"]:
        count = f" ×{e['count']}" if e.get("count", 1) > 1 else ""
        lines.append(f"  {e['at']}  {e['kind']:<12} → {e['state']:<10} {e['detail']}{count}")
    return lines
