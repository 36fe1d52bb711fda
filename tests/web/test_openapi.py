"""The OpenAPI document against the live server: schemathesis generates requests from it
for every operation and checks that no answer is a 500 and that every answer (status,
content type, headers, body) is what the document says; also with the write token."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pxeserver import model

from ..support.server import ServerProcess

pytestmark = pytest.mark.slow

TOKEN = "openapi-test-token"
SETTINGS: dict[str, Any] = {
    "profiles": {
        "coreos": {
            "kernel": "coreos/vmlinuz",
            "initrd": ["coreos/initrd.cpio.gz"],
            "args": ["console=ttyS0"],
            "cloud_config": "coreos.yaml.j2",
        },
        "flatcar": {
            "kernel": "flatcar/current/flatcar_production_pxe.vmlinuz",
            "initrd": ["flatcar/current/flatcar_production_pxe_image.cpio.gz"],
            "args": ["flatcar.first_boot=1"],
            "cloud_config": "flatcar.yaml.j2",
            "ignition": "flatcar.ign.j2",
        },
    },
    "groups": [
        {"name": "default", "profile": "coreos"},
        {"name": "arm", "profile": "flatcar", "selectors": {"arch": "arm64"}},
    ],
}
# Everything but negative_data_rejection: the server is deliberately lenient with what
# firmware sends (blanks around a MAC, unknown arch values are ignored, not refused).
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
]


def schemathesis(server: ServerProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    st = Path(sys.executable).parent / "st"
    return subprocess.run(
        [str(st), "run", server.url + "/api/v1/openapi.json", "--checks", ",".join(CHECKS),
         "--max-examples", "25", "--workers", "1", "--seed", "20261128",
         "--generation-database", "none", "--request-timeout", "30", *extra],
        capture_output=True, text=True, timeout=900, cwd=server.workdir,
    )  # fmt: skip


@pytest.mark.parametrize("with_token", [False, True], ids=["open", "token"])
def test_schemathesis_finds_nothing(tmp_path: Path, with_token: bool) -> None:
    settings = dict(SETTINGS)
    extra: list[str] = []
    if with_token:
        settings["server"] = {"api_token": TOKEN}
        extra = ["--header", f"Authorization: Bearer {TOKEN}"]
    (tmp_path / "assets" / "coreos").mkdir(parents=True)
    (tmp_path / "assets" / "coreos" / "vmlinuz").write_bytes(b"kernel" * 100)
    server = ServerProcess(tmp_path, settings=settings, args=["--no-dhcp", "--no-tftp"]).start()
    try:
        for i in range(3):  # some nodes for the operations on one node to find
            server.get(f"/ipxe?mac=52:54:00:00:01:{i:02x}")
        out = schemathesis(server, *extra)
        log = server.log()
    finally:
        server.stop()
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "Test cases:" in out.stdout and " passed" in out.stdout
    assert "Traceback" not in log


def test_document_describes_every_route(client: Any, app: Any) -> None:
    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    documented = set(doc["paths"])
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "page.static", "page.index"):
            continue
        path = rule.rule.replace("<path:relative>", "{path}").replace("<mac>", "{mac}")
        assert path in documented, f"{rule.rule} is not in the OpenAPI document"
    patch = doc["components"]["schemas"]["NodePatch"]["properties"]["profile"]
    assert patch["enum"] == ["coreos", "debug", "flatcar", None]  # this server's profiles
    json.dumps(doc)  # serialisable as it is served


def test_the_document_takes_its_enums_and_patterns_from_the_model(client: Any) -> None:
    schemas = client.get("/api/v1/openapi.json").json["components"]["schemas"]
    patch = schemas["NodePatch"]["properties"]
    assert patch["hostname"]["pattern"] == model.HOSTNAME_PATTERN
    assert patch["labels"]["propertyNames"]["pattern"] == model.LABEL_NAME_PATTERN
    value = patch["labels"]["additionalProperties"]
    assert (value["pattern"], value["maxLength"]) == (
        model.LABEL_VALUE_PATTERN,
        model.LABEL_VALUE_MAX,
    )
    assert schemas["Node"]["properties"]["state"]["enum"] == [s.value for s in model.State]
    assert schemas["Event"]["properties"]["kind"]["enum"] == [k.value for k in model.EventKind]
    mac = client.get("/api/v1/openapi.json").json["paths"]["/api/v1/nodes/{mac}"]["parameters"]
    assert mac[0]["schema"]["pattern"] == model.MAC_PATTERN


BODIES: list[Any] = [
    {"profile": "debug", "labels": {"rack": "r1", "old": None}, "hostname": "node-9"},
    {"profile": None, "reinstall": True},
    {},
    {"profile": "gone"},
    {"profile": 7},
    {"labels": {"rack": "r1,r2"}},
    {"labels": {"rack": "x" * 254}},
    {"labels": {"-rack": "r1"}},
    {"labels": {"rack": 1}},
    {"hostname": "Node-9"},
    {"hostname": "-node"},
    {"reinstall": "yes"},
    {"colour": "blue"},
    ["profile", "debug"],
]


@pytest.mark.parametrize("body", BODIES, ids=[json.dumps(b)[:40] for b in BODIES])
def test_a_patch_is_refused_exactly_when_the_document_refuses_it(client: Any, body: Any) -> None:
    """The served document's NodePatch, read by a stock JSON Schema validator, and the
    API's answer agree: one declaration decides both."""
    client.get("/ipxe?mac=52:54:00:00:00:01")
    schema = client.get("/api/v1/openapi.json").json["components"]["schemas"]["NodePatch"]
    documented = Draft202012Validator(schema).is_valid(body)
    r = client.patch("/api/v1/nodes/52:54:00:00:00:01", json=body)
    assert (r.status_code != 400) == documented, (r.status_code, r.json)
    if not documented:  # one sentence, not a list of validator messages
        assert "\n" not in r.json["error"] and len(r.json["error"]) < 300, r.json
