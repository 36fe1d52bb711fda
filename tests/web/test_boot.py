from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from pxeserver.daemon import make_service
from pxeserver.model import MAC
from pxeserver.web import boot, create_app

from ..support.fakes import BrokenStore
from ..support.settings import make_settings
from ..support.web import config_path, fetch_config


def test_chain_script(client: Any) -> None:
    r = client.get("/boot.ipxe", base_url="http://127.0.0.1:8080")  # an address of ours
    assert r.status_code == 200
    assert r.text.startswith("#!ipxe")
    assert "chain --autofree http://127.0.0.1:8080/ipxe?mac=${netX/mac}" in r.text


def test_ipxe_script_records_the_node_as_booting(client: Any) -> None:
    r = client.get(
        "/ipxe?mac=52-54-00-12-34-56&arch=x86_64&platform=efi&uuid=6fb9d0e1-0000-4000-8000-00000000abcd"
    )
    assert r.status_code == 200, r.text
    assert "\nkernel http://localhost/assets/coreos/vmlinuz initrd=initrd.cpio.gz " in r.text
    assert (
        "\ninitrd --name initrd.cpio.gz http://localhost/assets/coreos/initrd.cpio.gz\n" in r.text
    )
    node = client.get("/api/v1/nodes/525400123456").json
    assert node["state"] == "booting" and node["boot_count"] == 1
    assert node["hostname"] == "node-001" and node["platform"] == "efi" and node["arch"] == "x86_64"
    assert node["uuid"] == "6fb9d0e1-0000-4000-8000-00000000abcd"
    assert node["ip"] == "127.0.0.1"
    assert "# pxeserver: 52:54:00:12:34:56 (node-001)" in r.text


def test_cloud_config_is_the_nodes_own_and_marks_it_configured(client: Any) -> None:
    client.get("/ipxe?mac=52:54:00:12:34:56")
    r = fetch_config(client, "52:54:00:12:34:57")
    assert r.status_code == 200
    assert r.text.startswith("#cloud-config\n")
    doc = yaml.safe_load(r.text)
    assert doc["hostname"] == "node-002"
    assert client.get("/api/v1/nodes/52:54:00:12:34:57").json["state"] == "configured"
    assert client.get("/api/v1/nodes/52:54:00:12:34:56").json["state"] == "booting"


def test_cloud_config_names_the_address_the_os_fetched_it_from(tmp_path: Path) -> None:
    # The firmware's lease (iPXE's ${netX/ip}) and the booted OS's lease may differ:
    # systemd-networkd asks DHCP with a DUID, not 01:MAC. The OS fetches its own config,
    # so that request's address is the one fleet must advertise and pxeserver record
    # (another address of the same network, by default).
    settings = make_settings(tmp_path)
    client = create_app(settings, make_service(settings)).test_client()
    mac = "52:54:00:12:34:58"
    firmware = {"REMOTE_ADDR": "192.0.2.101"}
    script = client.get(f"/ipxe?mac={mac}&ip=192.0.2.101", environ_base=firmware).text
    assert client.get(f"/api/v1/nodes/{mac}").json["ip"] == "192.0.2.101"
    os_side = {"REMOTE_ADDR": "192.0.2.140"}
    r = client.get(config_path(script), environ_base=os_side)
    assert r.status_code == 200, r.text
    assert yaml.safe_load(r.text)["coreos"]["fleet"]["public_ip"] == "192.0.2.140"
    node = client.get(f"/api/v1/nodes/{mac}").json
    assert node["ip"] == "192.0.2.140" and node["state"] == "configured"


def test_second_boot_keeps_the_hostname_and_counts(client: Any) -> None:
    for _ in range(2):
        client.get("/ipxe?mac=52:54:00:12:34:56")
    node = client.get("/api/v1/nodes/52:54:00:12:34:56").json
    assert node["hostname"] == "node-001" and node["boot_count"] == 2


@pytest.mark.parametrize(
    "path", ["/ipxe?mac=zz:zz", "/ipxe", "/cloud-config?mac=1234", "/ipxe?mac=52:54:00:12:34"]
)
def test_malformed_macs_are_400_with_a_sentence(client: Any, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 400
    assert "mac" in r.text.lower() and ("expected" in r.text or "mac=" in r.text)
    assert client.get("/api/v1/nodes").json["count"] == 0


def test_garbage_optional_facts_do_not_stop_a_boot(client: Any) -> None:
    r = client.get("/ipxe?mac=52:54:00:12:34:56&uuid=nonsense&arch=pdp11&platform=amiga&ip=not-ip")
    assert r.status_code == 200
    node = client.get("/api/v1/nodes/52:54:00:12:34:56").json
    assert node["uuid"] is None and node["arch"] is None and node["platform"] is None
    assert node["ip"] == "127.0.0.1"


def test_store_down_is_503_with_retry_after_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings, make_service(settings, BrokenStore()))
    client = app.test_client()
    for path in (
        "/ipxe?mac=52:54:00:12:34:56",
        "/cloud-config?mac=52:54:00:12:34:56",
        "/api/v1/nodes",
    ):
        r = client.get(path)
        assert r.status_code == 503, path
        assert r.headers["Retry-After"] == "5"
        assert "store is unavailable" in r.text
    assert "store unavailable" in caplog.text
    assert "no group" not in caplog.text and "no match" not in caplog.text
    assert client.get("/healthz").status_code == 503


def test_no_matching_group_is_404_and_recorded(tmp_path: Path) -> None:
    raw = {"groups": [{"name": "efi-only", "profile": "coreos", "selectors": {"platform": "efi"}}]}
    settings = make_settings(tmp_path, raw)
    from pxeserver.store.sqlite import SQLiteStore

    app = create_app(settings, make_service(settings, SQLiteStore(tmp_path / "s.db")))
    client = app.test_client()
    r = client.get("/ipxe?mac=52:54:00:12:34:56&platform=pcbios")
    assert r.status_code == 404 and "no group selects this machine" in r.text
    node = client.get("/api/v1/nodes/52:54:00:12:34:56").json
    assert node["state"] == "discovered" and node["events"][-1]["detail"].startswith(
        "no group matches"
    )
    assert client.get("/ipxe?mac=52:54:00:12:34:56&platform=efi").status_code == 200


def test_a_broken_template_is_500_and_leaves_the_node_as_it_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    templates = tmp_path / "t"
    templates.mkdir()
    (templates / "bad.yaml.j2").write_text("#cloud-config\nhostname: {{ node.hostnme }}\n")
    raw = {
        "paths": {"templates_dir": str(templates)},
        "profiles": {"b": {"kernel": "k", "cloud_config": "bad.yaml.j2"}},
        "groups": [{"name": "d", "profile": "b"}],
    }
    settings = make_settings(tmp_path, raw)
    from pxeserver.store.sqlite import SQLiteStore

    client = create_app(
        settings, make_service(settings, SQLiteStore(tmp_path / "s.db"))
    ).test_client()
    r = fetch_config(client, "52:54:00:12:34:56")
    assert r.status_code == 500 and "hostnme" in r.text
    assert "#cloud-config" not in r.text
    assert "rendering failed" in caplog.text and "hostnme" in caplog.text
    assert client.get("/api/v1/nodes/52:54:00:12:34:56").json["state"] == "booting"


def test_huge_query_strings_are_refused(client: Any) -> None:
    r = client.get("/ipxe?mac=52:54:00:12:34:56&x=" + "a" * 10000)
    assert r.status_code == 414


# The ip= attack of issue 16: Python's ipaddress takes an IPv6 scope ID (after "%") with
# newlines and quotes in it; the flatcar template put the address in fleet.conf's block.
SCOPE_ATTACK = (
    'fe80::1%"\n  - path: "\\x2fhome\\x2fcore\\x2f.ssh\\x2fauthorized_keys"\n'
    "    content: |\n      ssh-ed25519 AAAAC3 evil\n      x"
)


def _files(client: Any, mac: str, source: str = "127.0.0.1", query: str = "") -> dict[str, str]:
    """The files of ``mac``'s cloud-config, fetched from ``source`` (the booted OS) with
    the URL of a script fetched from there too."""
    script = client.get(f"/ipxe?mac={mac}", environ_base={"REMOTE_ADDR": source}).text
    r = client.get(config_path(script) + query, environ_base={"REMOTE_ADDR": source})
    assert r.status_code == 200, r.text
    return {f["path"]: f["content"] for f in yaml.safe_load(r.text)["write_files"]}


@pytest.mark.parametrize("ip", [SCOPE_ATTACK, "fe80::1%eth0", "fe80::1%\u2028x"])
def test_an_ip_with_a_scope_id_is_dropped_and_adds_no_files(
    tmp_path: Path, ip: str, caplog: pytest.LogCaptureFixture
) -> None:
    from pxeserver.store.sqlite import SQLiteStore

    settings = make_settings(tmp_path, {"groups": [{"name": "d", "profile": "flatcar"}]})
    store = SQLiteStore(tmp_path / "s.db")
    client = create_app(settings, make_service(settings, store)).test_client()
    # positive control: a plain address is recorded; fleet.conf names the address the
    # booted OS fetched its config from (the firmware's lease may differ)
    assert client.get("/ipxe?mac=52:54:00:00:00:01&ip=192.0.2.33").status_code == 200
    assert client.get("/api/v1/nodes/52:54:00:00:00:01").json["ip"] == "192.0.2.33"
    benign = _files(client, "52:54:00:00:00:01", "192.0.2.34")
    assert 'public_ip="192.0.2.34"' in benign["/etc/fleet/fleet.conf"]

    r = client.get("/ipxe", query_string={"mac": "52:54:00:00:00:02", "ip": ip})
    assert r.status_code == 200, r.text
    # the scoped address is dropped like other garbage: the address the request came from
    assert client.get("/api/v1/nodes/52:54:00:00:00:02").json["ip"] == "127.0.0.1"
    assert "ignoring ip=" in caplog.text and "scope" in caplog.text
    hostile = _files(client, "52:54:00:00:00:02")
    assert sorted(hostile) == sorted(benign)
    assert 'public_ip="127.0.0.1"' in hostile["/etc/fleet/fleet.conf"]
    # the cloud-config's own query cannot name an address either
    query = "&" + urlencode({"ip": ip})
    again = _files(client, "52:54:00:00:00:02", "192.0.2.35", query)
    assert sorted(again) == sorted(benign)
    assert 'public_ip="192.0.2.35"' in again["/etc/fleet/fleet.conf"]
    store.close()


def test_boot_answers_name_their_charset_once(client: Any) -> None:
    """The content type said ``charset=utf-8`` twice (Flask adds it to text/ types)."""
    assert client.get("/boot.ipxe").headers["Content-Type"] == "text/plain; charset=utf-8"
    ipxe = client.get("/ipxe?mac=52:54:00:12:34:57")
    assert ipxe.headers["Content-Type"] == "text/plain; charset=utf-8"
    config = client.get(config_path(ipxe.text))
    assert config.headers["Content-Type"] == "text/cloud-config; charset=utf-8"


@pytest.mark.parametrize(
    "text", ["192.0.2.7", "2001:DB8::1", "::ffff:192.0.2.7", "0:0:0:0:0:0:0:1", "::"]
)
def test_a_parsed_address_is_normalised_the_second_time_too(text: str) -> None:
    mac = MAC.parse("52:54:00:00:00:01")
    expected = str(ipaddress.ip_address(text))
    assert boot.source_ip(mac, text) == expected
    assert boot.source_ip(mac, text) == expected  # from the parsed addresses
    assert boot.machine_of({"mac": str(mac), "ip": text}, "192.0.2.99").ip == expected


@pytest.mark.parametrize("text", ["1.2.3", "192.0.2.7\n", "fe80::1%eth0", SCOPE_ATTACK, " "])
def test_garbage_is_warned_about_each_time_and_never_kept(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    mac = MAC.parse("52:54:00:00:00:01")
    for _ in range(2):
        caplog.clear()
        assert boot.machine_of({"mac": str(mac), "ip": text}, "192.0.2.9").ip == "192.0.2.9"
        assert "ignoring ip=" in caplog.text
        assert boot.source_ip(mac, text) is None
    assert text not in boot._parsed


def test_the_parsed_addresses_are_bounded() -> None:
    """A client sending a new ip= with each request cannot grow the worker's memory."""
    mac = MAC.parse("52:54:00:00:00:01")
    for i in range(boot.MAX_PARSED + 100):
        text = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        assert boot.source_ip(mac, text) == text
        assert len(boot._parsed) <= boot.MAX_PARSED
    assert boot.source_ip(mac, "2001:db8::0001") == "2001:db8::1"


UUID = "6FB9D0E1-0000-4000-8000-00000000ABCD"


@pytest.mark.parametrize("text", [UUID, f"{{{UUID}}}", f"urn:uuid:{UUID}", UUID.replace("-", "")])
def test_a_uuid_is_normalised_the_second_time_too_and_never_taken_for_an_address(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    mac = MAC.parse("52:54:00:00:00:01")
    for _ in range(2):
        machine = boot.machine_of({"mac": str(mac), "uuid": text, "ip": text}, "192.0.2.9")
        assert machine.uuid == UUID.lower()
        assert machine.ip == "192.0.2.9"  # the uuid= seen before is no address
        assert "ignoring ip=" in caplog.text
        assert boot.source_ip(mac, text) is None


@pytest.mark.parametrize("text", ["not-a-uuid", UUID + "0", UUID[:-1] + "\n"])
def test_a_bad_uuid_is_warned_about_each_time_and_never_kept(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    mac = MAC.parse("52:54:00:00:00:01")
    for _ in range(2):
        caplog.clear()
        assert boot.machine_of({"mac": str(mac), "uuid": text}, "192.0.2.9").uuid is None
        assert "ignoring uuid" in caplog.text
    assert text not in boot._uuids


def test_the_parsed_uuids_are_bounded() -> None:
    mac = MAC.parse("52:54:00:00:00:01")
    for i in range(boot.MAX_PARSED + 100):
        text = f"{i:08x}-0000-4000-8000-00000000abcd"
        assert boot.machine_of({"mac": str(mac), "uuid": text}, None).uuid == text
        assert len(boot._uuids) <= boot.MAX_PARSED
