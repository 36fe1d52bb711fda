"""Ignition (spec 3): validation, the /ignition endpoint, the kernel line, and check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pxeserver.checks import check_settings
from pxeserver.daemon import make_service
from pxeserver.render import ignition
from pxeserver.store.sqlite import SQLiteStore
from pxeserver.web import create_app

from ..support.settings import LAB_PROFILES, REPO, make_settings

MAC = "52:54:00:00:00:51"
GOOD: dict[str, Any] = {
    "ignition": {"version": "3.3.0"},
    "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAA a@b"]}]},
    "storage": {
        "files": [
            {"path": "/etc/hostname", "mode": 420, "contents": {"source": "data:,node-001"}},
            {
                "path": "/opt/x",
                "contents": {"source": "https://192.0.2.1/x", "compression": "gzip"},
            },
        ],
        "directories": [{"path": "/opt/bin", "mode": 493}],
        "links": [{"path": "/opt/y", "target": "/opt/x"}],
    },
    "systemd": {
        "units": [
            {"name": "a.service", "enabled": True, "contents": "[Service]\n"},
            {"name": "b.timer", "dropins": [{"name": "x.conf", "contents": "[Timer]\n"}]},
        ]
    },
}


def client_for(settings: Any, tmp_path: Path) -> Any:
    service = make_service(settings, SQLiteStore(tmp_path / "s.db"))
    return create_app(settings, service).test_client()


def test_a_good_config_passes() -> None:
    doc, errors = ignition.validate(json.dumps(GOOD))
    assert errors == [] and doc["ignition"]["version"] == "3.3.0"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["ignition"].update(version="2.2.0"), "not a spec 3 version"),
        (lambda d: d.pop("ignition"), "ignition: is required"),
        (lambda d: d.update(storag={}), "storag: unknown key"),
        (lambda d: d["storage"]["files"][0].update(path="etc/x"), "must be an absolute path"),
        (lambda d: d["storage"]["files"][0].update(mode=644), "644 is decimal in JSON; for 0644"),
        (lambda d: d["storage"]["files"][0].update(mode="0644"), "must be a number"),
        (lambda d: d["storage"]["files"][1].update(path="/etc/hostname"), "also written by"),
        (
            lambda d: d["storage"]["files"][0]["contents"].update(source="ftp://x/y"),
            "must be a data: URL",
        ),
        (lambda d: d["systemd"]["units"][0].update(name="a"), "must be a unit name"),
        (lambda d: d["systemd"]["units"][0].update(enabled="yes"), "enabled: must be bool"),
        (lambda d: d["systemd"]["units"].append({"name": "a.service"}), "listed twice"),
        (lambda d: d["systemd"]["units"][1]["dropins"][0].update(name="x"), "ending in .conf"),
        (lambda d: d["passwd"]["users"][0].pop("name"), "name: is required"),
        (lambda d: d["passwd"]["users"][0].update(sshAuthorizedKeys="k"), "list of non-empty"),
        (lambda d: d["storage"].update(disks={}), "storage.disks: must be a list"),
    ],
)
def test_mistakes_are_caught(change: Any, message: str) -> None:
    doc = json.loads(json.dumps(GOOD))
    change(doc)
    _, errors = ignition.validate(json.dumps(doc))
    assert any(message in e for e in errors), errors


def test_not_json_says_where() -> None:
    _, errors = ignition.validate('{"ignition": {"version": "3.3.0"},}')
    assert errors and errors[0].startswith("not valid JSON: ") and "line 1" in errors[0]


def ignition_settings(tmp_path: Path, template: str = "flatcar.ign.j2") -> Any:
    profiles = {
        **LAB_PROFILES,
        "ign": {
            "kernel": "flatcar/current/flatcar_production_pxe.vmlinuz",
            "initrd": ["flatcar/current/flatcar_production_pxe_image.cpio.gz"],
            "args": ["flatcar.first_boot=1"],
            "ignition": template,
        },
    }
    raw = {
        "profiles": profiles,
        "groups": [{"name": "default", "profile": "ign"}],
        "cluster": {"ssh_authorized_keys": ["ssh-ed25519 AAAAC3Nza test@example"]},
    }
    if template != "flatcar.ign.j2":
        raw["paths"] = {"templates_dir": str(tmp_path)}
    return make_settings(tmp_path, raw)


def test_ignition_endpoint_serves_the_nodes_config_and_records_it(tmp_path: Path) -> None:
    settings = ignition_settings(tmp_path)
    client = create_app(
        settings, make_service(settings, SQLiteStore(tmp_path / "s.db"))
    ).test_client()
    script = client.get(f"/ipxe?mac={MAC}&platform=efi").text
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    assert f"ignition.config.url=http://localhost/ignition?mac={MAC}" in kernel
    assert "cloud-config-url" not in kernel and "flatcar.first_boot=1" in kernel
    r = client.get(f"/ignition?mac={MAC}")
    assert r.status_code == 200 and r.content_type == "application/vnd.coreos.ignition+json"
    doc = r.json
    assert doc["ignition"]["version"] == "3.3.0"
    files = {f["path"]: f for f in doc["storage"]["files"]}
    assert files["/etc/hostname"]["contents"]["source"] == "data:,node-001"
    assert files["/etc/pxeserver/node.env"]["mode"] == 0o600
    assert doc["passwd"]["users"][0]["sshAuthorizedKeys"] == ["ssh-ed25519 AAAAC3Nza test@example"]
    units = {u["name"] for u in doc["systemd"]["units"]}
    assert {"fleet.service", "pxeserver-ready.service", "pxeserver-heartbeat.timer"} <= units
    node = client.get(f"/api/v1/nodes/{MAC}").json
    assert node["state"] == "configured"
    assert [e["kind"] for e in node["events"]] == ["ipxe", "ignition"]


def test_a_profile_without_ignition_is_404(client: Any) -> None:
    client.get(f"/ipxe?mac={MAC}")
    r = client.get(f"/ignition?mac={MAC}")
    assert r.status_code == 404 and "has no Ignition config" in r.text
    assert client.get(f"/api/v1/nodes/{MAC}").json["state"] == "booting"


def test_a_broken_template_is_500_changes_nothing_and_fails_check(tmp_path: Path) -> None:
    (tmp_path / "bad.ign.j2").write_text('{"ignition": {"version": "2.3.0"}, "passwd": {}}')
    settings = ignition_settings(tmp_path, "bad.ign.j2")
    client = create_app(
        settings, make_service(settings, SQLiteStore(tmp_path / "s.db"))
    ).test_client()
    client.get(f"/ipxe?mac={MAC}")
    r = client.get(f"/ignition?mac={MAC}")
    assert r.status_code == 500 and "not a spec 3 version" in r.text
    assert client.get(f"/api/v1/nodes/{MAC}").json["state"] == "booting"
    problems = check_settings(settings)
    assert any(p.key == "profiles.ign.ignition" and "2.3.0" in p.what for p in problems)


def test_the_shipped_template_passes_check(tmp_path: Path) -> None:
    settings = ignition_settings(tmp_path)
    assert not [p for p in check_settings(settings) if "ignition" in p.key]
    assert (REPO / "cloud-configs" / "flatcar.ign.j2").exists()
