"""Ignition (spec 3): validation, the /ignition endpoint, the kernel line, and check."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator

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
        (lambda d: d["storage"]["files"][0].update(mode="0644"), "mode: must be integer"),
        (lambda d: d["storage"]["files"][1].update(path="/etc/hostname"), "also written by"),
        (
            lambda d: d["storage"]["files"][0]["contents"].update(source="ftp://x/y"),
            "must be a data: URL",
        ),
        (lambda d: d["systemd"]["units"][0].update(name="a"), "must be a unit name"),
        (lambda d: d["systemd"]["units"][0].update(enabled="yes"), "enabled: must be boolean"),
        (lambda d: d["systemd"]["units"].append({"name": "a.service"}), "listed twice"),
        (lambda d: d["systemd"]["units"][1]["dropins"][0].update(name="x"), "ending in .conf"),
        (lambda d: d["passwd"]["users"][0].pop("name"), "name: is required"),
        (lambda d: d["passwd"]["users"][0].update(sshAuthorizedKeys="k"), "Keys: must be array"),
        (lambda d: d["passwd"]["users"][0].update(sshAuthorizedKeys=[""]), "must not be empty"),
        (lambda d: d["storage"].update(disks={}), "storage.disks: must be array"),
        # what the spec's schema says, in depth: types and required keys everywhere
        (lambda d: d["storage"].update(disks=[{"wipeTable": True}]), "disks[0].device: is requ"),
        (lambda d: d["storage"]["files"][0].update(user={"id": "core"}), "user.id: must be int"),
        (lambda d: d.update(kernelArguments={"shouldExist": [1]}), "shouldExist[0]: must be str"),
        # keys the spec does not have, at any depth (the schema names the known ones)
        (lambda d: d["storage"]["files"][0]["contents"].update(sourc="x"), "contents.sourc: unk"),
        (lambda d: d["storage"]["links"][0].pop("target"), "links[0].target: is required"),
    ],
)
def test_mistakes_are_caught(change: Any, message: str) -> None:
    doc = json.loads(json.dumps(GOOD))
    change(doc)
    _, errors = ignition.validate(json.dumps(doc))
    assert any(message in e for e in errors), errors


def test_each_spec_version_is_checked_against_its_own_schema() -> None:
    doc = json.loads(json.dumps(GOOD))
    doc["kernelArguments"] = {"shouldExist": ["quiet"]}  # new in spec 3.3
    assert ignition.validate(json.dumps(doc))[1] == []
    doc["ignition"]["version"] = "3.2.0"
    assert ignition.validate(json.dumps(doc))[1] == [
        "kernelArguments: unknown key (known: ignition, passwd, storage, systemd)"
    ]
    # a later spec than the newest schema shipped is checked against that one
    assert ignition.spec_for("3.5.0") == "v3_4_experimental"
    assert ignition.spec_for("3.0.0") == "v3_0"


def test_the_shipped_schemas_are_the_ones_their_source_file_names() -> None:
    """scripts/ignition-spec wrote them from Debian's source package of Ignition; a file
    edited since no longer has the SHA-256 recorded beside it."""
    folder = REPO / "pxeserver" / "render" / "ignition_spec"
    recorded = dict(
        reversed(line.split()) for line in (folder / "SOURCE").read_text().splitlines()
        if re.fullmatch(r"[0-9a-f]{64}  \S+", line)
    )  # fmt: skip
    assert set(recorded) == {f"{n}.json" for n in ignition.SPECS.values()} | {"LICENSE", "NOTICE"}
    for name, digest in recorded.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    for name in ignition.SPECS.values():
        Draft4Validator.check_schema(ignition.spec(name).schema)


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


def ignition_validate(tmp_path: Path, doc: Any) -> subprocess.CompletedProcess[str]:
    """Ignition's own validator (Debian's ignition package, Ignition 2.14) on ``doc``."""
    tool = shutil.which("ignition-validate")
    if tool is None:
        raise RuntimeError("ignition-validate is missing: scripts/setup test installs it")
    path = tmp_path / "config.ign"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)


def test_what_a_node_is_served_passes_ignitions_own_validator(tmp_path: Path) -> None:
    settings = ignition_settings(tmp_path)
    client = create_app(
        settings, make_service(settings, SQLiteStore(tmp_path / "s.db"))
    ).test_client()
    served = client.get(f"/ignition?mac={MAC}").text
    out = ignition_validate(tmp_path, served)
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr
    # positive control: Ignition refuses what the schema refuses, and only warns of an
    # unknown key, which pxeserver refuses (a misspelt key silently does nothing)
    bad = json.loads(served)
    bad["storage"]["files"][0]["mode"] = "0644"
    out = ignition_validate(tmp_path, bad)
    assert out.returncode != 0 and "mode of type int" in out.stdout + out.stderr
    assert ignition.validate(json.dumps(bad))[1]
    typo = {**json.loads(served), "storag": {}}
    out = ignition_validate(tmp_path, typo)
    assert out.returncode == 0 and "Unused key storag" in out.stdout + out.stderr
