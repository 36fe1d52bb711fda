"""Secrets are never logged and never served.

The API token: in no log line (DEBUG, text and JSON formats) and in no HTTP response,
whatever was asked, by an operator with the token or by anyone without it. A wrong token
someone presented: not logged either. A node's own token: in that node's cloud-config
(the machine needs it to phone home, and has no credential to fetch it with), in explain
for an operator who presents the API token, and nowhere else: not in the node API, the
page, the metrics, another node's cloud-config, or a log line.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pxeserver import config

from ..support.net import free_port
from ..support.server import ServerProcess
from ..support.web import config_path

NODE = "52:54:00:5e:c2:01"
OTHER = "52:54:00:5e:c2:02"


def node_token(cloud_config: str) -> str:
    """The token the shipped Flatcar cloud-config hands its phone-home units."""
    found = re.search(r"^\s*PXESERVER_TOKEN=(\S+)$", cloud_config, re.M)
    assert found, cloud_config
    return found.group(1)


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_tokens_are_never_logged_and_served_only_where_they_belong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_format: str
) -> None:
    api_token = "api-" + secrets.token_urlsafe(24)
    wrong = "api-" + secrets.token_urlsafe(24)
    server_settings: dict[str, Any] = {
        "listen": "127.0.0.1",
        "dhcp": False,
        "tftp_port": free_port(socket.SOCK_DGRAM),
        "log_level": "DEBUG",
        "log_format": log_format,
    }
    if log_format == "text":
        server_settings["api_token"] = api_token  # from the settings file
    else:
        monkeypatch.setenv("PXESERVER_API_TOKEN", api_token)  # from the environment
    root = tmp_path / "tftproot"
    root.mkdir()
    (root / "hello.txt").write_text("hello\n")
    paths = {"data_dir": str(tmp_path / "var"), "tftp_root": str(root)}
    settings = {"server": server_settings, "paths": paths}
    server = ServerProcess(tmp_path, settings=settings).start()
    auth = {"Authorization": f"Bearer {api_token}"}
    responses: list[tuple[str, int, str]] = []

    def call(method: str, path: str, body: Any = None, headers: Any = None) -> tuple[int, str]:
        status, head, data = server.request(method, path, body, headers)
        text = data.decode(errors="replace")
        responses.append((f"{method} {path} {headers and list(headers)}", status, text))
        responses.append((f"{method} {path} headers", status, str(head)))
        return status, text

    try:
        scripts = {mac: call("GET", f"/ipxe?mac={mac}&platform=efi") for mac in (NODE, OTHER)}
        assert [status for status, _ in scripts.values()] == [200, 200]
        config = config_path(scripts[NODE][1])
        status, text = call("GET", config)
        assert status == 200
        token = node_token(text)
        own = f"Bearer {token}"
        assert call("POST", f"/api/v1/nodes/{NODE}/ready", headers={"Authorization": own})[0] == 200
        assert call("POST", f"/api/v1/nodes/{NODE}/heartbeat", {"token": token})[0] == 200
        # the node's token does not work for another node, nor a wrong one for it
        bad = {"Authorization": f"Bearer {wrong}"}
        assert (
            call("POST", f"/api/v1/nodes/{OTHER}/ready", headers={"Authorization": own})[0] == 403
        )
        assert call("POST", f"/api/v1/nodes/{NODE}/ready", headers=bad)[0] == 403
        assert call("POST", f"/api/v1/nodes/{NODE}/ready")[0] == 401
        # operators: with the token, with a wrong one (as the node's own!), without
        labels = {"labels": {"rack": "r1"}}
        assert call("PATCH", f"/api/v1/nodes/{NODE}", labels, auth)[0] == 200
        assert call("PATCH", f"/api/v1/nodes/{NODE}", labels, bad)[0] == 403
        assert call("PATCH", f"/api/v1/nodes/{NODE}", labels, {"Authorization": own})[0] == 403
        assert call("PATCH", f"/api/v1/nodes/{NODE}", labels)[0] == 401
        assert call("DELETE", f"/api/v1/nodes/{OTHER}", None, bad)[0] == 403
        assert call("PATCH", f"/api/v1/nodes/{NODE}", {"reinstall": True}, auth)[0] == 200
        # everything an operator or a stranger can read
        reads = ["/", "/ui/app.js", "/boot.ipxe", "/api/v1/nodes", f"/api/v1/nodes/{NODE}",
                 f"/api/v1/nodes/{NODE}/explain", f"/api/v1/nodes/{OTHER}/explain",
                 "/api/v1/info", "/api/v1/openapi.json", "/metrics", "/healthz",
                 f"/cloud-config?mac={OTHER}", f"/ipxe?mac={NODE}", "/no-such-page",
                 f"/api/v1/nodes/{NODE}/explain?platform=pcbios"]  # fmt: skip
        for path in reads:
            call("GET", path)
            call("GET", path, headers=bad)
        # a TFTP transfer from an address no sighting names: a DEBUG line
        tftp = f"tftp://127.0.0.1:{server_settings['tftp_port']}/hello.txt"
        out = subprocess.run(["curl", "-s", "-m", "20", tftp], capture_output=True, timeout=60)
        assert out.stdout == b"hello\n"
        status, explained = call("GET", f"/api/v1/nodes/{NODE}/explain", headers=auth)
        assert status == 200 and json.loads(explained)["token_hidden"] is False
    finally:
        server.stop()
    log = server.log()
    lines = log.splitlines()
    refused = sum(1 for what, status, _ in responses if "headers" not in what and status >= 400)
    print(
        f"{len(responses) // 2} HTTP calls, {refused} refused or not found, {len(lines)} log lines"
    )
    if log_format == "text":
        assert any(" DEBUG " in x for x in lines), log  # the most talkative level
    else:
        assert any(json.loads(x)["level"] == "DEBUG" for x in lines if x.startswith("{"))
        assert any('"event": "ready"' in x for x in lines)  # boot milestones are there
    # the API token and the wrong one: in no log line and in no response
    # and the key of the config URLs' secrets (made into the data folder)
    fetch_key = (tmp_path / "var" / "fetch.key").read_text().strip()
    for secret in (api_token, wrong, fetch_key):
        leaked = [x for x in lines if secret in x]
        assert not leaked, leaked
        served = [(what, status) for what, status, text in responses if secret in text]
        assert not served, served
    # the node's token: in its own cloud-config and in explain for the operator only
    served = sorted({what for what, _, text in responses if token in text})
    assert served == [
        f"GET /api/v1/nodes/{NODE}/explain ['Authorization']",
        f"GET {config} None",
    ], served
    assert not [x for x in lines if token in x]


def test_a_malformed_api_token_is_not_shown_in_the_error(tmp_path: Path) -> None:
    _, problems = config.parse({"server": {"api_token": 918273645546372819}}, "s.yaml", None)
    said = [str(p) for p in problems if not p.warning]
    assert said == [
        "s.yaml: server.api_token: is a int, not a string (the value is not shown: it is a "
        'secret) — quote it: api_token: "…"'
    ]
    assert "918273645546372819" not in "".join(said)
