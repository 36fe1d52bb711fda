"""``/api/v1/nodes/<mac>/explain`` and ``/api/v1/info``: what the node page shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pxeserver.daemon import make_service
from pxeserver.store.sqlite import SQLiteStore
from pxeserver.web import create_app

from ..support.settings import make_settings
from ..support.web import fetch_config

MAC = "52:54:00:00:00:61"
GROUPS = [
    {"name": "racked", "profile": "debug", "selectors": {"rack": "r1"}},
    {"name": "default", "profile": "coreos"},
]


def client_for(settings: Any, tmp_path: Path) -> Any:
    service = make_service(settings, SQLiteStore(tmp_path / "s.db"))
    return create_app(settings, service).test_client()


def app_with(tmp_path: Path, **server: Any) -> Any:
    settings = make_settings(tmp_path, {"groups": GROUPS, "server": server})
    return create_app(
        settings, make_service(settings, SQLiteStore(tmp_path / "s.db"))
    ).test_client()


def test_explain_shows_the_decision_and_what_would_be_served(tmp_path: Path) -> None:
    client = app_with(tmp_path)
    fetch_config(client, MAC)
    x = client.get(f"/api/v1/nodes/{MAC}/explain").json
    assert x["known"] and x["profile"] == "coreos" and x["group"] == "default"
    assert [(v["group"], v["matched"], v["chosen"]) for v in x["verdicts"]] == [
        ("racked", False, False),
        ("default", True, True),
    ]
    assert x["verdicts"][0]["why"] == "rack is None, wants r1"
    assert x["verdicts"][0]["selectors"] == {"rack": ["r1"]}
    assert x["ipxe"].startswith("#!ipxe\n") and "initrd=" not in x["ipxe"]
    assert x["cloud_config"].startswith("#cloud-config") and x["ignition"] is None
    # The node's token is not shown to anyone who can read the API.
    assert x["token_hidden"] and "<node token: hidden" in x["cloud_config"]
    # Nothing was recorded by explaining.
    node = client.get(f"/api/v1/nodes/{MAC}").json
    assert [e["kind"] for e in node["events"]] == ["ipxe", "cloud-config"]
    # Nor does it issue or use the node's config secret: its script shows a placeholder.
    assert "&secret=issued-per-boot" in x["ipxe"]


def test_explain_follows_labels_and_platform(tmp_path: Path) -> None:
    client = app_with(tmp_path)
    client.get(f"/ipxe?mac={MAC}")
    client.patch(f"/api/v1/nodes/{MAC}", json={"labels": {"rack": "r1"}})
    x = client.get(f"/api/v1/nodes/{MAC}/explain?platform=efi").json
    assert x["profile"] == "debug" and x["group"] == "racked"
    assert "all 1 selectors match (rack=r1)" in x["reason"]
    assert " rack=r1" in x["ipxe"] and "initrd=initrd.cpio.gz" in x["ipxe"]
    assert client.get(f"/api/v1/nodes/{MAC}/explain?platform=bogus").status_code == 400


def test_explain_of_a_machine_nothing_selects(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, {"groups": GROUPS[:1]})
    client = create_app(
        settings, make_service(settings, SQLiteStore(tmp_path / "s.db"))
    ).test_client()
    assert client.get(f"/ipxe?mac={MAC}").status_code == 404
    x = client.get(f"/api/v1/nodes/{MAC}/explain").json
    assert x["profile"] is None and "no group selects this machine" in x["reason"]
    assert x["verdicts"] == [
        {
            "group": "racked",
            "profile": "debug",
            "selectors": {"rack": ["r1"]},
            "matched": False,
            "chosen": False,
            "why": "rack is None, wants r1",
        }
    ]


def test_explain_needs_a_known_node(client: Any) -> None:
    r = client.get(f"/api/v1/nodes/{MAC}/explain")
    assert r.status_code == 404 and "pxeserver render" not in r.json["error"]
    assert client.get("/api/v1/nodes/nonsense/explain").status_code == 400


def test_the_api_token_shows_the_node_token(tmp_path: Path) -> None:
    client = app_with(tmp_path, api_token="op")
    fetch_config(client, MAC)
    hidden = client.get(f"/api/v1/nodes/{MAC}/explain").json
    shown = client.get(f"/api/v1/nodes/{MAC}/explain", headers={"Authorization": "Bearer op"}).json
    wrong = client.get(
        f"/api/v1/nodes/{MAC}/explain", headers={"Authorization": "Bearer nope"}
    ).json
    assert hidden["token_hidden"] and wrong["token_hidden"] and not shown["token_hidden"]
    assert "Bearer <node token: hidden" in hidden["cloud_config"]
    assert "<node token" not in shown["cloud_config"] and "Bearer " in shown["cloud_config"]


def test_info_tells_the_page_what_there_is(tmp_path: Path) -> None:
    info = app_with(tmp_path, api_token="op").get("/api/v1/info").json
    assert info["writes_need_token"] is True
    assert info["profiles"] == ["coreos", "debug", "flatcar"]
    assert info["states"] == ["discovered", "booting", "configured", "ready", "lost"]
    assert info["groups"][0] == {
        "name": "racked",
        "profile": "debug",
        "selectors": {"rack": ["r1"]},
    }


def test_the_page_and_its_files_are_served(client: Any) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.content_type.startswith("text/html")
    assert b"<title>pxeserver" in r.data and b"/ui/app.js" in r.data
    assert client.get("/ui/app.js").status_code == 200
    assert client.get("/ui/style.css").status_code == 200


def test_405_names_the_allowed_methods(client: Any) -> None:
    r = client.put("/api/v1/info")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD, OPTIONS"
