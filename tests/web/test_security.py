"""Safe by default (issue 16, item 4): without an API token, changes come from this
machine only; every answer carries the security headers; the URLs machines are given never
come from a Host header that names no address of this server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pxeserver.daemon import make_service
from pxeserver.web import create_app
from pxeserver.web.security import HEADERS

from ..support.settings import make_settings
from ..support.web import MAC, boot, config_path

NETWORK = {"REMOTE_ADDR": "192.0.2.7"}  # a machine on the boot network
LABEL = {"labels": {"rack": "r9"}}
REFUSED = "set server.api_token"
OPEN_TO_ALL = {"allow_unauthenticated_writes": True}


@pytest.fixture
def make_client(tmp_path: Path) -> Any:
    made: list[Any] = []

    def make(server: dict[str, Any] | None = None) -> Any:
        settings = make_settings(tmp_path, {"server": server or {}})
        service = make_service(settings)
        made.append(service)
        app = create_app(settings, service)
        app.config["TESTING"] = True
        return app.test_client()

    yield make
    for service in made:
        service.close()


def labels(client: Any) -> dict[str, str]:
    return dict(client.get(f"/api/v1/nodes/{MAC}").json["labels"])


def test_without_a_token_changes_from_the_network_are_refused(make_client: Any) -> None:
    client = make_client()
    boot(client)
    patch = client.patch(f"/api/v1/nodes/{MAC}", json=LABEL, environ_base=NETWORK)
    assert patch.status_code == 403 and REFUSED in patch.json["error"], patch.json
    assert "allow_unauthenticated_writes" in patch.json["error"]
    delete = client.delete(f"/api/v1/nodes/{MAC}", environ_base=NETWORK)
    assert delete.status_code == 403
    assert labels(client) == {}  # nothing changed, nothing forgotten
    # The control: the same change from this machine goes through.
    assert client.patch(f"/api/v1/nodes/{MAC}", json=LABEL).status_code == 200
    assert labels(client) == {"rack": "r9"}


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "192.0.2.7"},  # a reverse proxy on this host
        {"Forwarded": "for=192.0.2.7"},
        {"Host": "rebound.example:8080"},  # a web page that rebinds its name to us
        {"Host": "127.0.0.1:9999"},  # another port: another server's page
    ],
)
def test_a_proxy_or_a_rebound_name_is_not_this_machine(
    make_client: Any, headers: dict[str, str]
) -> None:
    client = make_client()
    boot(client)
    refused = client.patch(f"/api/v1/nodes/{MAC}", json=LABEL, headers=headers)
    assert refused.status_code == 403, refused.json
    assert labels(client) == {}
    ok = client.patch(f"/api/v1/nodes/{MAC}", json=LABEL, headers={"Host": "localhost:8080"})
    assert ok.status_code == 200  # the control: this machine, by a name it may use


def test_the_setting_opens_changes_to_anyone(make_client: Any) -> None:
    client = make_client({"allow_unauthenticated_writes": True})
    boot(client)
    assert client.patch(f"/api/v1/nodes/{MAC}", json=LABEL, environ_base=NETWORK).status_code == 200
    assert client.delete(f"/api/v1/nodes/{MAC}", environ_base=NETWORK).status_code == 204


def test_with_a_token_this_machine_needs_it_too(make_client: Any) -> None:
    client = make_client({"api_token": "s3cret", "allow_unauthenticated_writes": True})
    boot(client)
    assert client.patch(f"/api/v1/nodes/{MAC}", json=LABEL).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    ok = client.patch(f"/api/v1/nodes/{MAC}", json=LABEL, headers=auth, environ_base=NETWORK)
    assert ok.status_code == 200


def test_the_node_calls_keep_their_own_token_from_anywhere(make_client: Any) -> None:
    client = make_client()
    token = boot(client)
    auth = {"Authorization": f"Bearer {token}"}
    ready = client.post(f"/api/v1/nodes/{MAC}/ready", headers=auth, environ_base=NETWORK)
    assert ready.status_code == 200, ready.json
    missing = client.post(f"/api/v1/nodes/{MAC}/heartbeat", environ_base=NETWORK)
    assert missing.status_code == 401


@pytest.mark.parametrize(
    ("server", "local", "remote"),
    [
        ({}, ("loopback", False, "local"), ("loopback", True, "nobody")),
        (OPEN_TO_ALL, ("anyone", False, "open"), ("anyone", False, "open")),
        ({"api_token": "s3cret"}, ("token", True, "token"), ("token", True, "token")),
    ],
)  # fmt: skip
def test_info_and_the_page_say_who_may_change_nodes(
    make_client: Any,
    server: dict[str, Any],
    local: tuple[str, bool, str],
    remote: tuple[str, bool, str],
) -> None:
    client = make_client(server)
    for environ, (writes, need, banner) in (({}, local), (NETWORK, remote)):
        info = client.get("/api/v1/info", environ_base=environ).json
        assert (info["writes"], info["writes_need_token"]) == (writes, need), environ
        # The page's first paint: the banner's words chosen for this browser (index.html).
        page = client.get("/", environ_base=environ).get_data(as_text=True)
        assert f'<body data-writes="{banner}">' in page, environ
        assert f'class="when-{banner}"' in page


def test_every_answer_carries_the_security_headers(make_client: Any, tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "kernel").write_bytes(b"k" * 100)
    client = make_client()
    boot(client)
    config = config_path(client.get(f"/ipxe?mac={MAC}").text)
    paths = ["/", "/ui/app.js", "/api/v1/nodes", f"/ipxe?mac={MAC}", config,
             "/assets/kernel", "/healthz", "/metrics", "/no/such/page"]  # fmt: skip
    for path in paths:
        resp = client.get(path)
        assert resp.status_code in (200, 404), path
        for name, value in HEADERS.items():
            assert resp.headers.get(name) == value, (path, name)
    refused = client.delete(f"/api/v1/nodes/{MAC}", environ_base=NETWORK)
    assert refused.headers["X-Content-Type-Options"] == "nosniff"
    policy = HEADERS["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def urls(text: str) -> set[str]:
    return {word.split("/", 3)[2] for word in text.replace('"', " ").split() if "://" in word}


def test_urls_in_scripts_never_come_from_an_unlisted_host(make_client: Any) -> None:
    client = make_client()
    boot(client)
    for host in ("evil.example", "evil.example:8080", "localhost:9999"):
        script = client.get(f"/ipxe?mac={MAC}", headers={"Host": host}).text
        config = client.get(config_path(script), headers={"Host": host}).text
        yaml.safe_load(config)
        # The address of ours on the route back to the asking machine (here, loopback).
        assert urls(script) == {"127.0.0.1:8080"}, (host, script)
        assert "127.0.0.1:8080" in urls(config) and "evil" not in config, host
    # From the network, an address that is not ours is not trusted either.
    script = client.get(f"/ipxe?mac={MAC}", headers={"Host": "192.0.2.250:8080"},
                        environ_base=NETWORK).text  # fmt: skip
    assert "192.0.2.250" not in script and urls(script), script
    # The controls: a Host that names an address of this server is what the machine used;
    # an address that came over loopback came through a forwarder here (QEMU's user
    # network: 10.0.2.2 is the host's loopback for `pxeserver demo`'s VM).
    for host in ("localhost:8080", "10.0.2.2:8080"):
        assert urls(client.get(f"/ipxe?mac={MAC}", headers={"Host": host}).text) == {host}


def test_base_url_or_the_listening_address_win_over_any_host(make_client: Any) -> None:
    evil = {"Host": "evil.example:8080"}
    configured = make_client({"base_url": "http://pxe.lab.example:8080"})
    assert urls(configured.get(f"/ipxe?mac={MAC}", headers=evil).text) == {"pxe.lab.example:8080"}
    listening = make_client({"listen": "127.0.0.2"})
    assert urls(listening.get(f"/ipxe?mac={MAC}", headers=evil).text) == {"127.0.0.2:8080"}


def test_a_host_header_is_judged_alike_the_second_time_and_its_parses_are_bounded(
    tmp_path: Path,
) -> None:
    from pxeserver.web import context

    s = make_settings(tmp_path).server
    hosts = ["127.0.0.1:8080", "[::1]:8080", "[0:0::1]:8080", "localhost:8080", "127.0.0.1:9",
             "evil.example:8080", "192.0.2.250:8080", "[fe80::1%eth0]:8080", "[::1%0a]:8080",
             "10.0.2.2:8080", "1.2.3:8080", ""]  # fmt: skip
    for remote in ("127.0.0.1", "192.0.2.7"):
        first = [context.listed_host(s, h, remote) for h in hosts]
        assert [context.listed_host(s, h, remote) for h in hosts] == first
        assert first[0] == "127.0.0.1:8080"
        if remote == "127.0.0.1":  # any address, over loopback (a forwarder here)
            assert first[1:3] == ["[::1]:8080", "[0:0::1]:8080"]
        assert first[4:6] == [None, None]  # another port; a name nobody listed
    assert "evil.example" not in context._hosts
    for i in range(context.MAX_HOSTS + 50):
        assert context._address_of(f"10.1.{i >> 8}.{i & 255}") == f"10.1.{i >> 8}.{i & 255}"
        assert len(context._hosts) <= context.MAX_HOSTS
