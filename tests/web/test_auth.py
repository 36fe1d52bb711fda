"""The OpenAPI document says who may call each operation, and that is what the server
enforces: every operation of the document is called without credentials (from the boot
network and from this machine), with a wrong token, with the API token and with the
node's own token, under each of the server's write rules, and what it refused is held to
what the document's ``security`` promised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pxeserver.daemon import make_service
from pxeserver.web import create_app

from ..support.settings import make_settings
from ..support.web import MAC, boot

TOKEN = "api-token-for-the-auth-test"
NETWORK = {"REMOTE_ADDR": "192.0.2.7"}
LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}
RULES = {
    "token": {"api_token": TOKEN},
    "loopback": {},
    "anyone": {"allow_unauthenticated_writes": True},
}
BODIES = {"patch": {"labels": {"rack": "r1"}}}


def documented(operation: dict[str, Any]) -> str:
    """Who the document says may call ``operation``: none (anyone), loopback, apiToken or
    nodeToken."""
    security = operation.get("security", [])
    if not security:
        return "none"
    if {} in security:
        return "loopback" if operation.get("x-pxeserver-from") == "loopback" else "none"
    schemes = {name for requirement in security for name in requirement}
    assert len(schemes) == 1, security
    return schemes.pop()


def enforced(accepted: dict[str, bool]) -> str:
    """Who the server let through, from the outcome of each kind of call."""
    if accepted["nothing, from the network"]:
        return "none"
    if accepted["nothing, from this machine"]:
        return "loopback"
    assert not accepted["a wrong token"]
    if accepted["the API token"] and not accepted["the node's token"]:
        return "apiToken"
    if accepted["the node's token"] and not accepted["the API token"]:
        return "nodeToken"
    return f"unclear: {accepted}"


class Caller:
    """Calls operations of the document on a fresh app, with a node to call them on."""

    def __init__(self, tmp_path: Path, server: dict[str, Any]) -> None:
        (tmp_path / "assets").mkdir(exist_ok=True)
        (tmp_path / "assets" / "kernel").write_bytes(b"k" * 64)
        settings = make_settings(tmp_path, {"server": server})
        self.service = make_service(settings)
        app = create_app(settings, self.service)
        app.config["TESTING"] = True
        self.client = app.test_client()

    def call(self, method: str, template: str, credential: str, environ: dict[str, str]) -> int:
        node_token = boot(self.client)  # the node exists (again, if a DELETE forgot it)
        token = {"a wrong token": "wrong", "the API token": TOKEN}.get(credential)
        token = node_token if credential == "the node's token" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        path = template.replace("{mac}", MAC).replace("{path}", "kernel")
        query = {"mac": MAC} if path in ("/ipxe", "/cloud-config", "/ignition") else {}
        # Closed at once, as a server closes what it sent: an unread file answer would hold
        # its slot of limits.http_requests_per_client (web/guard.py) and later calls got 503.
        with self.client.open(
            path,
            method=method.upper(),
            query_string=query,
            headers=headers,
            json=BODIES.get(method),
            environ_base=environ,
        ) as resp:
            return int(resp.status_code)


CALLS = {
    "nothing, from the network": (None, NETWORK),
    "nothing, from this machine": (None, LOOPBACK),
    "a wrong token": ("a wrong token", NETWORK),
    "the API token": ("the API token", NETWORK),
    "the node's token": ("the node's token", NETWORK),
}


@pytest.mark.parametrize("rule", RULES)
def test_the_document_states_what_the_server_enforces(tmp_path: Path, rule: str) -> None:
    caller = Caller(tmp_path, RULES[rule])
    try:
        doc = caller.client.get("/api/v1/openapi.json").json
        wrong = []
        checked = 0
        for template, item in doc["paths"].items():
            for method, operation in item.items():
                if method == "parameters":
                    continue
                statuses = {
                    what: caller.call(method, template, credential or "", environ)
                    for what, (credential, environ) in CALLS.items()
                }
                accepted = {what: status not in (401, 403) for what, status in statuses.items()}
                said, done = documented(operation), enforced(accepted)
                if said != done:
                    wrong.append(f"{method.upper()} {template}: says {said}, does {done} "
                                 f"({statuses})")  # fmt: skip
                checked += 1
    finally:
        caller.service.close()
    assert checked >= 14  # every operation was called (the control that the loop ran)
    assert not wrong, "\n".join(wrong)


def test_the_controls_each_kind_of_rule_is_told_apart() -> None:
    """The classification the test relies on can tell every rule apart."""
    everyone = dict.fromkeys(CALLS, True)
    assert enforced(everyone) == "none"
    local = {**dict.fromkeys(CALLS, False), "nothing, from this machine": True}
    assert enforced(local) == "loopback"
    api = {**dict.fromkeys(CALLS, False), "the API token": True}
    assert enforced(api) == "apiToken"
    node = {**dict.fromkeys(CALLS, False), "the node's token": True}
    assert enforced(node) == "nodeToken"
    assert documented({"security": [{"nodeToken": []}, {}]}) == "none"
    assert documented({"security": [{}], "x-pxeserver-from": "loopback"}) == "loopback"
