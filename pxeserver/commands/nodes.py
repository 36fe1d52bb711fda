"""``pxeserver nodes``: the client of a running server's node API, and how nodes are shown.

Everything goes through the HTTP API (the same one the node page and operators' scripts
use); an answer that is not a success becomes a :class:`~pxeserver.errors.PxeError` that
names the call, the status and the server's sentence.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any

from ..errors import InvalidInput, PxeError
from ..hints import command
from ..model import MAC

DEFAULT_SERVER = "http://127.0.0.1:8080"
TOKEN_ENV = "PXESERVER_API_TOKEN"


class Api:
    """Calls to a running server's ``/api/v1``, with the API token when one is given."""

    def __init__(self, server: str, token: str | None, origin: str = "") -> None:
        self.server = checked_url(server).rstrip("/")
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
            raise PxeError(refused(method, path, exc.code, str(message))) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise PxeError(unreachable(self.server, exc, origin=self.origin)) from exc
        return json.loads(raw) if raw else None

    def nodes(self, state: str | None, profile: str | None, labels: tuple[str, ...]) -> Any:
        query = []
        if state:
            query.append(f"state={state}")
        if profile:
            query.append(f"profile={urllib.parse.quote(profile)}")
        query += [f"label={urllib.parse.quote(label_filter(label))}" for label in labels]
        return self.call("GET", "/api/v1/nodes" + ("?" + "&".join(query) if query else ""))["nodes"]

    def info(self) -> Any:
        return self.call("GET", "/api/v1/info")

    def node(self, mac: str) -> Any:
        return self.call("GET", f"/api/v1/nodes/{MAC.parse(mac)}")

    def set(self, mac: str, body: dict[str, Any]) -> Any:
        return self.call("PATCH", f"/api/v1/nodes/{MAC.parse(mac)}", body)

    def forget(self, mac: str) -> str:
        address = MAC.parse(mac).value
        self.call("DELETE", f"/api/v1/nodes/{address}")
        return address


# -- what went wrong, in words a person can act on ------------------------------------------


def checked_url(server: str) -> str:
    """``server`` if it is an http(s) URL; else InvalidInput that says how to write it."""
    parts = urllib.parse.urlsplit(server)
    if "://" not in server or parts.scheme not in ("http", "https") or not parts.hostname:
        example = f"http://{server.split('://', 1)[-1]}" if server else DEFAULT_SERVER
        raise InvalidInput(
            f"--server {server!r} is not a URL: write it with its scheme, e.g. {example}"
        )
    return server


def refused(method: str, path: str, status: int, message: str) -> str:
    """The server answered ``status``: what it means for the person at the command line."""
    if status == 401:
        return (
            f"{method} {path}: 401: this server takes changes only with its API token: give "
            f"--token TOKEN or set {TOKEN_ENV}"
        )
    if status == 403:
        return (
            f"{method} {path}: 403: the API token given (--token or {TOKEN_ENV}) is not this "
            "server's: check it"
        )
    return f"{method} {path}: {status} {message}"


def unreachable(server: str, exc: BaseException, hint: str | None = None, origin: str = "") -> str:
    """No HTTP answer from ``server``: a TLS mismatch named as such, else how to start one
    (``hint``: what to start, if not the default ``pxeserver serve``; ``origin``: how the
    server was chosen, said with it)."""
    reason = getattr(exc, "reason", exc)
    plain = server.replace("https://", "http://", 1)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"{server}: its TLS certificate is not trusted here ({reason.verify_message}); "
            "give the CA that signed it (SSL_CERT_FILE) or check the name in the URL"
        )
    if isinstance(reason, ssl.SSLError) and server.startswith("https://"):
        return (
            f"{server} does not speak TLS ({reason.reason or reason}): it serves plain HTTP, "
            f"so use {plain}"
        )
    if server.startswith("http://") and isinstance(
        reason, (ConnectionResetError, http.client.RemoteDisconnected, http.client.BadStatusLine)
    ):
        secure = server.replace("http://", "https://", 1)
        return (
            f"{server} closed the connection without an HTTP answer; if it serves HTTPS, use "
            f"{secure}"
        )
    hint = hint or f"is `pxeserver serve` running? start it with {command('serve')}"
    if origin:
        return f"cannot reach {server} ({origin}): {reason}; {hint}"
    return f"cannot reach {server} ({reason}); {hint}"


def label_filter(text: str) -> str:
    """A ``--label`` filter, ``K=V``; InvalidInput (in the CLI's own words) otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise InvalidInput(f"--label {text!r}: write KEY=VALUE, e.g. --label rack=r1")
    return text


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


def echo(n: dict[str, Any], body: dict[str, Any]) -> list[str]:
    """``nodes set``: one line for each change asked (``body``), as the server now has it."""
    who = f"{n['mac']} {n['hostname']}:"
    lines = []
    if "profile" in body:
        lines.append(f"{who} profile {n['profile'] or '-'} ({n['profile_source']})")
    for key, value in body.get("labels", {}).items():
        now = n["labels"].get(key)
        lines.append(f"{who} label {key}={now}" if value else f"{who} label {key} removed")
    if "hostname" in body:
        lines.append(f"{who} hostname {n['hostname']}")
    if body.get("reinstall"):
        lines.append(f"{who} its next boot installs {n['profile']} again")
    return lines


def nothing_found(api: Api, state: str | None, profile: str | None, labels: tuple[str, ...]) -> str:
    """Why ``nodes list`` shows no node: the filters, and a profile the server lacks."""
    filters = [f"state {state}"] if state else []
    filters += [f"profile {profile}"] if profile else []
    filters += [f"label {label}" for label in labels]
    line = "no nodes" + (f" with {' and '.join(filters)}" if filters else " yet")
    if profile:
        known = api.info().get("profiles", [])
        if profile not in known:
            line += f"; this server has no profile {profile!r} (its profiles: {', '.join(known)})"
    return line


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
