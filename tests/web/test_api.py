from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pxeserver.daemon import make_service
from pxeserver.store.sqlite import SQLiteStore
from pxeserver.web import create_app

from ..support import fleet
from ..support.settings import make_settings
from ..support.web import MAC, boot


def test_list_and_filters(client: Any) -> None:
    boot(client, "52:54:00:00:00:01")
    client.get("/ipxe?mac=52:54:00:00:00:02")
    client.patch(
        "/api/v1/nodes/52:54:00:00:00:02", json={"labels": {"rack": "r1"}, "profile": "debug"}
    )
    all_ = client.get("/api/v1/nodes").json
    assert all_["count"] == 2
    assert "token" not in all_["nodes"][0] and "events" not in all_["nodes"][0]
    assert [n["mac"] for n in client.get("/api/v1/nodes?state=configured").json["nodes"]] == [
        "52:54:00:00:00:01"
    ]
    assert [n["mac"] for n in client.get("/api/v1/nodes?profile=debug").json["nodes"]] == [
        "52:54:00:00:00:02"
    ]
    assert [n["mac"] for n in client.get("/api/v1/nodes?label=rack=r1").json["nodes"]] == [
        "52:54:00:00:00:02"
    ]
    assert client.get("/api/v1/nodes?label=rack=r2").json["count"] == 0
    assert client.get("/api/v1/nodes?state=sleeping").status_code == 400
    assert client.get("/api/v1/nodes?label=rack").status_code == 400


def test_show_has_the_timeline_and_no_token(client: Any) -> None:
    boot(client)
    node = client.get(f"/api/v1/nodes/{MAC}").json
    assert "token" not in str(node)
    assert [e["kind"] for e in node["events"]] == ["ipxe", "cloud-config"]
    assert node["events"][0]["at"].endswith("Z")
    assert node["profile"] == "coreos" and node["profile_source"] == "group default"


def test_unknown_node_is_404(client: Any) -> None:
    r = client.get("/api/v1/nodes/52:54:00:99:99:99")
    assert r.status_code == 404 and r.json["error"] == "no node with MAC 52:54:00:99:99:99"
    assert (
        client.patch("/api/v1/nodes/52:54:00:99:99:99", json={"hostname": "x"}).status_code == 404
    )
    assert client.delete("/api/v1/nodes/52:54:00:99:99:99").status_code == 404
    assert client.get("/api/v1/nodes/garbage").status_code == 400


def test_patch_profile_overrides_groups_and_shows_in_the_script(client: Any) -> None:
    client.get(f"/ipxe?mac={MAC}")
    r = client.patch(f"/api/v1/nodes/{MAC}", json={"profile": "debug", "labels": {"rack": "r7"}})
    assert (
        r.status_code == 200
        and r.json["profile"] == "debug"
        and r.json["profile_source"] == "operator"
    )
    script = client.get(f"/ipxe?mac={MAC}").text
    assert " debug rack=r7 " in script
    r = client.patch(f"/api/v1/nodes/{MAC}", json={"profile": None})
    assert r.json["profile"] == "coreos"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"profile": "nope"}, "no profile named 'nope'"),
        ({"hostname": "Bad_Name"}, "not a valid hostname"),
        ({"labels": {"bad key!": "x"}}, "label name"),
        ({"labels": {"k": ["x"]}}, "must be a string"),
        ({"labels": {"rack": 7}}, "label rack: the value must be a string"),  # as documented
        ({"labels": {"rack": "r1\n"}}, "U+000A"),  # JSON Schema's "$" is the end of the text
        ({"reinstall": "yes"}, "reinstall must be true"),
        ({"labels": "rack=r1"}, "labels must be an object"),
        ({"colour": "blue"}, "unknown fields"),
        ("not an object", "send a JSON object"),
    ],
)
def test_patch_rejects_bad_bodies_and_changes_nothing(client: Any, body: Any, message: str) -> None:
    client.get(f"/ipxe?mac={MAC}")
    before = client.get(f"/api/v1/nodes/{MAC}").json
    r = client.patch(f"/api/v1/nodes/{MAC}", json=body)
    assert r.status_code == 400 and message in r.json["error"]
    assert client.get(f"/api/v1/nodes/{MAC}").json == before


def test_rename_to_a_taken_hostname_is_409(client: Any) -> None:
    client.get("/ipxe?mac=52:54:00:00:00:01")
    client.get("/ipxe?mac=52:54:00:00:00:02")
    r = client.patch("/api/v1/nodes/52:54:00:00:00:02", json={"hostname": "node-001"})
    assert r.status_code == 409
    assert client.get("/api/v1/nodes/52:54:00:00:00:02").json["hostname"] == "node-002"


def test_forget(client: Any) -> None:
    client.get(f"/ipxe?mac={MAC}")
    assert client.delete(f"/api/v1/nodes/{MAC}").status_code == 204
    assert client.get(f"/api/v1/nodes/{MAC}").status_code == 404


def test_ready_and_heartbeat_need_the_nodes_token(client: Any) -> None:
    token = boot(client)
    assert client.post(f"/api/v1/nodes/{MAC}/ready").status_code == 401
    assert (
        client.post(
            f"/api/v1/nodes/{MAC}/ready", headers={"Authorization": "Bearer nope"}
        ).status_code
        == 403
    )
    assert client.get(f"/api/v1/nodes/{MAC}").json["state"] == "configured"
    r = client.post(f"/api/v1/nodes/{MAC}/ready", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json["state"] == "ready"
    r = client.post(f"/api/v1/nodes/{MAC}/heartbeat", data={"token": token})
    assert r.status_code == 200
    r = client.post(f"/api/v1/nodes/{MAC}/heartbeat", json={"token": token})
    assert r.status_code == 200
    events = client.get(f"/api/v1/nodes/{MAC}").json["events"]
    assert [e["kind"] for e in events] == ["ipxe", "cloud-config", "ready", "heartbeat"]
    assert events[-1]["count"] == 2


def test_writes_need_the_api_token_when_one_is_set(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, {"server": {"api_token": "op-secret"}})
    client = create_app(
        settings, make_service(settings, SQLiteStore(tmp_path / "s.db"))
    ).test_client()
    client.get(f"/ipxe?mac={MAC}")
    r = client.patch(f"/api/v1/nodes/{MAC}", json={"labels": {"a": "b"}})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert (
        client.delete(f"/api/v1/nodes/{MAC}", headers={"Authorization": "Bearer wrong"}).status_code
        == 403
    )
    ok = client.patch(
        f"/api/v1/nodes/{MAC}",
        json={"labels": {"a": "b"}},
        headers={"Authorization": "Bearer op-secret"},
    )
    assert ok.status_code == 200
    assert client.get("/api/v1/nodes").status_code == 200  # reads stay open


def test_body_size_is_limited(client: Any) -> None:
    client.get(f"/ipxe?mac={MAC}")
    r = client.patch(
        f"/api/v1/nodes/{MAC}", data=b"{" + b" " * 70000 + b"}", content_type="application/json"
    )
    assert r.status_code == 413


def test_healthz(client: Any) -> None:
    assert client.get("/healthz").json == {"status": "ok", "store": "ok"}


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\r", "\n", "\x0b", "\x00", "\x7f"])
def test_a_line_break_or_control_character_in_a_label_is_400_naming_it(
    client: Any, char: str
) -> None:
    client.get(f"/ipxe?mac={MAC}")
    # positive control: YAML-hostile text that is one line is a label like any other
    r = client.patch(f"/api/v1/nodes/{MAC}", json={"labels": {"note": "- path: x # | > ---"}})
    assert r.status_code == 200 and r.json["labels"]["note"] == "- path: x # | > ---"
    before = client.get(f"/api/v1/nodes/{MAC}").json
    r = client.patch(f"/api/v1/nodes/{MAC}", json={"labels": {"rack": f"r1{char}write_files:"}})
    assert r.status_code == 400, r.json
    assert "label rack" in r.json["error"] and f"U+{ord(char):04X}" in r.json["error"]
    assert client.get(f"/api/v1/nodes/{MAC}").json == before


def test_a_line_separator_in_a_hostname_is_400_naming_it(client: Any) -> None:
    client.get(f"/ipxe?mac={MAC}")
    r = client.patch(f"/api/v1/nodes/{MAC}", json={"hostname": "node-9\u2028write_files:"})
    assert r.status_code == 400 and r.json["error"].startswith("hostname ")
    assert client.patch(f"/api/v1/nodes/{MAC}", json={"hostname": "node-9"}).status_code == 200


def fleet_of(app: Any, count: int) -> list[Any]:
    """``count`` fleet nodes written into the app's store; the nodes as written."""
    now = time.time()
    fleet.register(app.extensions["pxeserver"].registry.store, count, now)
    return list(fleet.nodes(count, now))


def macs(answer: Any) -> list[str]:
    return [n["mac"] for n in answer["nodes"]]


def test_a_page_of_nodes_in_the_order_asked(app: Any, client: Any) -> None:
    nodes = fleet_of(app, 60)
    newest_first = [n.mac.value for n in sorted(nodes, key=lambda n: (-n.last_seen, n.mac.value))]
    answer = client.get("/api/v1/nodes?sort=last_seen&order=desc&limit=10&offset=20").json
    assert macs(answer) == newest_first[20:30]
    assert (answer["count"], answer["offset"], answer["limit"]) == (60, 20, 10)
    oldest_first = client.get("/api/v1/nodes?sort=last_seen&limit=5").json
    assert macs(oldest_first) == newest_first[::-1][:5]
    # Without paging: every node, in MAC order, as before.
    everything = client.get("/api/v1/nodes").json
    assert macs(everything) == sorted(n.mac.value for n in nodes)
    assert (everything["count"], everything["limit"]) == (60, None)
    # Past the end: no rows, and still the count.
    beyond = client.get("/api/v1/nodes?limit=10&offset=60").json
    assert beyond["nodes"] == [] and beyond["count"] == 60


def test_the_summary_counts_every_node_whatever_the_filters(app: Any, client: Any) -> None:
    fleet_of(app, 60)  # out of every 20: 14 ready, 2 booting, 1 configured, 2 lost, 1 new
    expected = {"discovered": 3, "booting": 6, "configured": 3, "ready": 42, "lost": 6}
    ready = client.get("/api/v1/nodes?state=ready&limit=5").json
    assert ready["count"] == 42 and len(ready["nodes"]) == 5
    assert {n["state"] for n in ready["nodes"]} == {"ready"}
    assert ready["by_state"] == expected
    assert client.get("/api/v1/nodes?q=nothing-like-this").json["by_state"] == expected


def test_filters_then_sort_then_page(app: Any, client: Any) -> None:
    nodes = fleet_of(app, 60)
    rack = [n for n in nodes if n.labels.get("rack") == "r03" and n.state.value == "ready"]
    assert len(rack) >= 1
    answer = client.get("/api/v1/nodes?label=rack=r03&state=ready&sort=hostname&order=desc").json
    assert macs(answer) == [n.mac.value for n in sorted(rack, key=lambda n: n.hostname)][::-1]


def test_search_by_text_in_mac_hostname_or_ip(app: Any, client: Any) -> None:
    nodes = fleet_of(app, 60)
    by_name = client.get("/api/v1/nodes?q=NODE-0001").json  # any case
    assert sorted(n["hostname"] for n in by_name["nodes"]) == [
        f"node-000{i}" for i in range(10, 20)
    ]
    assert by_name["count"] == 10
    tenth = nodes[9]
    assert macs(client.get(f"/api/v1/nodes?q={tenth.mac.value.replace(':', '')}").json) == [
        tenth.mac.value
    ]
    assert macs(client.get(f"/api/v1/nodes?q={tenth.ip}").json) == [tenth.mac.value]


def test_nodes_without_the_field_come_last_in_either_order(app: Any, client: Any) -> None:
    fleet_of(app, 40)  # the last of every 20 (discovered) has no labels
    unlabelled = {n["mac"] for n in client.get("/api/v1/nodes?state=discovered").json["nodes"]}
    assert len(unlabelled) == 2
    for order in ("asc", "desc"):
        rows = client.get(f"/api/v1/nodes?sort=labels&order={order}").json["nodes"]
        assert {n["mac"] for n in rows[-2:]} == unlabelled, order
        labels = [n["labels"]["rack"] for n in rows[:-2]]
        assert labels == sorted(labels, reverse=order == "desc")


def test_hostnames_sort_by_their_numbers(client: Any) -> None:
    for i, name in ((1, "web-10"), (2, "web-9"), (3, "web-100")):
        mac = f"52:54:00:00:01:{i:02x}"
        client.get(f"/ipxe?mac={mac}")
        assert client.patch(f"/api/v1/nodes/{mac}", json={"hostname": name}).status_code == 200
    rows = client.get("/api/v1/nodes?sort=hostname").json["nodes"]
    assert [n["hostname"] for n in rows] == ["web-9", "web-10", "web-100"]  # not web-10 first


def test_states_sort_in_the_order_a_boot_goes(app: Any, client: Any) -> None:
    fleet_of(app, 20)
    rows = client.get("/api/v1/nodes?sort=state").json["nodes"]
    states = list(dict.fromkeys(n["state"] for n in rows))
    assert states == ["discovered", "booting", "configured", "ready", "lost"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sort=colour", "sort='colour' is unknown; sort by one of mac, hostname, ip, "),
        ("order=up", "order='up': write order=asc or order=desc"),
        ("limit=0", "limit='0': write a whole number of 1 or more"),
        ("limit=ten", "limit='ten': write a whole number of 1 or more"),
        ("offset=-1", "offset='-1': write a whole number of 0 or more"),
        ("limit=%C2%B2", "limit='²': write a whole number of 1 or more"),
    ],
)
def test_a_wrong_sort_or_page_is_400_saying_what_to_write(
    client: Any, query: str, message: str
) -> None:
    r = client.get(f"/api/v1/nodes?{query}")
    assert r.status_code == 400 and r.json["error"].startswith(message), r.json
    assert client.get("/api/v1/nodes?sort=ip&order=desc&limit=1&offset=0").status_code == 200
