"""A machine's config is handed out once per boot, to the machine that asked (issue 16
item 3; pxeserver/fetchsecret.py). Each test boots through the Flask app as a machine
would: its iPXE script, then the config URL that script names."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from pxeserver.daemon import make_service
from pxeserver.fetchsecret import ConfigRefused, FetchSecrets
from pxeserver.model import MAC as MAC_TYPE
from pxeserver.model import EventKind
from pxeserver.nodes.registry import Change
from pxeserver.store.sqlite import SQLiteStore
from pxeserver.web import create_app

from ..support.settings import LAB_PROFILES, make_settings
from ..support.web import config_path, fetch_config
from .test_metrics import sample, scrape

MAC = "52:54:00:00:16:03"
HERE = {"REMOTE_ADDR": "192.0.2.50"}  # the machine: script and config from one address
ELSEWHERE = {"REMOTE_ADDR": "198.51.100.66"}  # another network
IGNITION = {"kernel": "flatcar/vmlinuz", "ignition": "flatcar.ign.j2"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def made(tmp_path: Path) -> Any:
    """A client over settings of its own (``made(raw)``), like one HTTP worker of a server:
    all of a test's share the store and the data folder, and ``made.clock``."""
    clock = Clock()
    built: list[Any] = []

    def make(raw: dict[str, Any] | None = None, profile: str = "coreos") -> Any:
        raw = {
            "profiles": {**LAB_PROFILES, "ign": IGNITION},
            "groups": [{"name": "d", "profile": profile}],
            # Flask's test client holds its answers open: many from one address would
            # look like requests in flight to the per-client limit.
            "limits": {"http_requests_per_client": 10_000},
            **(raw or {}),
        }
        settings = make_settings(tmp_path, raw)
        service = make_service(settings, SQLiteStore(tmp_path / "s.db"))  # one store
        service.fetch.clock = clock
        built.append(service)
        return create_app(settings, service).test_client()

    make.clock = clock  # type: ignore[attr-defined]
    yield make
    for service in built:
        service.close()


def script(client: Any, environ: dict[str, str] = HERE) -> str:
    r = client.get(f"/ipxe?mac={MAC}", environ_base=environ)
    assert r.status_code == 200, r.text
    return str(r.text)


def node(client: Any) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/nodes/{MAC}").json)


def refused_events(client: Any) -> list[str]:
    return [e["detail"] for e in node(client)["events"] if e["detail"].startswith("refused")]


def refusals(client: Any, reason: str) -> float:
    return sample(scrape(client), "pxeserver_configs_refused_total", reason=reason)


def test_the_scripts_config_url_carries_a_secret_that_serves_the_config_once(made: Any) -> None:
    client = made()
    path = config_path(script(client))
    secret = parse_qs(urlsplit(path).query)["secret"][0]
    assert len(secret) > 30, path
    before = refusals(client, "used")
    first = client.get(path, environ_base=HERE)
    assert first.status_code == 200, first.text
    assert yaml.safe_load(first.text)["hostname"] == "node-001"
    assert node(client)["state"] == "configured" and refused_events(client) == []
    # the same URL again, from the same machine: refused, said, recorded, counted
    second = client.get(path, environ_base=HERE)
    assert second.status_code == 403
    assert second.text.count("\n") == 1 and "power-cycle the machine" in second.text
    assert "#cloud-config" not in second.text and node(client)["state"] == "configured"
    assert refused_events(client) == [
        "refused: second fetch of the same config (possible spoofing)"
    ]
    assert refusals(client, "used") == before + 1
    # the next boot's script carries a new secret, good once again
    made.clock.now += 30
    assert client.get(config_path(script(client)), environ_base=HERE).status_code == 200


def test_a_wrong_or_absent_secret_is_refused_and_previews_still_show_the_config(
    made: Any,
) -> None:
    client = made()
    good = config_path(script(client))
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    other_mac = config_path(script(client)).replace(MAC, "52:54:00:00:16:04")
    wrong_before, missing_before = refusals(client, "wrong"), refusals(client, "missing")
    for path in (tampered, other_mac):
        r = client.get(path, environ_base=HERE)
        assert r.status_code == 403 and "not one this server issued" in r.text, path
    absent = client.get(f"/cloud-config?mac={MAC}", environ_base=HERE)
    assert absent.status_code == 403
    assert "no secret=" in absent.text and f"pxeserver render {MAC}" in absent.text
    assert refusals(client, "wrong") == wrong_before + 2
    assert refusals(client, "missing") == missing_before + 1
    assert len(refused_events(client)) == 2  # the other MAC has no record to note it in
    assert client.get("/api/v1/nodes/52:54:00:00:16:04").status_code == 404
    # previews are not the node's fetch: they show the config, consume nothing
    explained = client.get(f"/api/v1/nodes/{MAC}/explain").json
    assert "secret=issued-per-boot" in explained["ipxe"]
    assert explained["cloud_config"].startswith("#cloud-config")
    placeholder = client.get(config_path(explained["ipxe"]), environ_base=HERE)
    assert placeholder.status_code == 403 and "a preview's placeholder" in placeholder.text
    assert client.get(good, environ_base=HERE).status_code == 200  # positive control


def test_another_network_is_refused_unless_the_setting_relaxes_it(made: Any) -> None:
    client = made()
    path = config_path(script(client))
    before = refusals(client, "address")
    r = client.get(path, environ_base=ELSEWHERE)
    assert r.status_code == 403
    assert "for the network of 192.0.2.50" in r.text and "not 198.51.100.66" in r.text
    assert "server.config_fetch_from: anywhere" in r.text
    assert refusals(client, "address") == before + 1
    assert refused_events(client) == [
        "refused: asked from 198.51.100.66, the script went to 192.0.2.50 (possible spoofing)"
    ]
    assert client.get(path, environ_base=HERE).status_code == 200  # the machine still can

    relaxed = made({"server": {"config_fetch_from": "anywhere"}})
    made.clock.now += 1
    path = config_path(script(relaxed))
    r = relaxed.get(path, environ_base=ELSEWHERE)
    assert r.status_code == 200, r.text
    # the OS's own address is what its config names, and the move is in the timeline
    assert yaml.safe_load(r.text)["coreos"]["fleet"]["public_ip"] == "198.51.100.66"
    assert node(relaxed)["events"][-1]["detail"] == (
        "profile coreos; asked from 198.51.100.66, not 192.0.2.50 where it was booting: "
        "a reboot, or another machine naming this MAC"
    )
    assert relaxed.get(path, environ_base=ELSEWHERE).status_code == 403  # once, still


def test_by_default_the_os_may_have_another_address_of_the_same_network(made: Any) -> None:
    """systemd-networkd (Container Linux, Flatcar) asks DHCP with a DUID, so the booted OS
    usually has another lease of the network than its firmware had (docs/SECURITY.md)."""
    os_lease = {"REMOTE_ADDR": "192.0.2.151"}  # beside HERE (192.0.2.50) in 192.0.2.0/24
    client = made()
    r = client.get(config_path(script(client)), environ_base=os_lease)
    assert r.status_code == 200, r.text
    assert yaml.safe_load(r.text)["coreos"]["fleet"]["public_ip"] == "192.0.2.151"
    # "address": the script's address only (the control: the same lease is refused)
    strict = made({"server": {"config_fetch_from": "address"}})
    made.clock.now += 1
    refused = strict.get(config_path(script(strict)), environ_base=os_lease)
    assert refused.status_code == 403 and "this config is for 192.0.2.50," in refused.text
    made.clock.now += 1
    assert strict.get(config_path(script(strict)), environ_base=HERE).status_code == 200


def test_a_network_of_this_server_is_the_one_that_counts() -> None:
    """For a machine on a link of this server, its network is that link's (a /16 here);
    beyond a router, the /24 (or /64) around the script's address."""
    key = lambda: b"k" * 32  # noqa: E731
    mac = MAC_TYPE.parse(MAC)
    linked = FetchSecrets(key, 600, fetch_from="network",
                          connected=lambda a: ipaddress.ip_network("10.20.0.0/16"))  # fmt: skip
    secret = linked.issue(mac, "10.20.1.5")
    assert linked.check(mac, secret, "10.20.200.9")  # same link, another /24
    routed = FetchSecrets(key, 600, fetch_from="network")
    secret = routed.issue(mac, "10.20.1.5")
    assert routed.check(mac, secret, "10.20.1.250")
    with pytest.raises(ConfigRefused):
        routed.check(mac, secret, "10.20.2.5")
    v6 = routed.issue(mac, "2001:db8:0:1::5")
    assert routed.check(mac, v6, "2001:db8:0:1:ffff::9")
    with pytest.raises(ConfigRefused):
        routed.check(mac, v6, "2001:db8:0:2::5")


def test_a_secret_older_than_the_window_is_refused(made: Any) -> None:
    client = made({"server": {"config_fetch_window": 60}})
    path = config_path(script(client))
    made.clock.now += 61
    before = refusals(client, "expired")
    r = client.get(path, environ_base=HERE)
    assert r.status_code == 403 and "issued 61 s ago" in r.text
    assert "server.config_fetch_window (60 s)" in r.text
    assert refusals(client, "expired") == before + 1
    fresh = config_path(script(client))
    made.clock.now += 59
    assert client.get(fresh, environ_base=HERE).status_code == 200  # within it: served


def test_ignition_is_served_once_too(made: Any) -> None:
    client = made(profile="ign")
    path = config_path(script(client))
    assert path.startswith(f"/ignition?mac={MAC}&secret=")
    assert client.get(path, environ_base=HERE).status_code == 200
    assert client.get(path, environ_base=HERE).status_code == 403
    assert client.get(f"/ignition?mac={MAC}", environ_base=HERE).status_code == 403


def test_an_older_secret_is_refused_once_a_newer_was_used(made: Any) -> None:
    """'Once' is kept in the node's record: a secret not newer than the one used is
    refused, also by a server process that never saw it used (another HTTP worker)."""
    one, other = made(), made()  # two workers: each its own memory, one store, one key
    older = config_path(script(one))
    made.clock.now += 1
    newer = config_path(script(one))
    assert one.get(newer, environ_base=HERE).status_code == 200
    assert other.get(newer, environ_base=HERE).status_code == 403  # it never saw it used
    assert other.get(older, environ_base=HERE).status_code == 403
    assert one.get(older, environ_base=HERE).status_code == 403
    made.clock.now += 1
    assert fetch_config(other, MAC, environ_base=HERE).status_code == 200  # control


def test_a_boot_get_from_another_address_says_so_in_the_timeline(made: Any) -> None:
    client = made()
    assert fetch_config(client, MAC, environ_base=HERE).status_code == 200
    assert node(client)["ip"] == "192.0.2.50"
    script(client, ELSEWHERE)  # someone names the configured node's MAC
    last = node(client)["events"][-1]
    assert last["kind"] == "ipxe" and "asked from 198.51.100.66, not 192.0.2.50" in last["detail"]
    assert "where it was configured" in last["detail"]
    script(client, ELSEWHERE)  # control: from the address recorded now, nothing to say
    assert node(client)["events"][-1]["detail"] == "profile coreos"


def test_the_key_is_made_once_in_the_data_folder_readable_by_pxeserver_only(
    tmp_path: Path, made: Any
) -> None:
    client = made()
    script(client)
    key = tmp_path / "var" / "fetch.key"
    assert key.stat().st_mode & 0o777 == 0o600
    text = key.read_text()
    script(made())
    assert key.read_text() == text
    # with the setting, that file is not used: a URL of the file's key is not good
    path = config_path(script(client))
    given = made({"server": {"config_fetch_key": "k" * 40}})
    assert given.get(path, environ_base=HERE).status_code == 403


def test_two_workers_fetching_at_the_same_moment_serve_one_config(made: Any) -> None:
    """The race's worst case: the other worker read the node before the first one
    recorded its config; the compare-and-swap that records it refuses the second."""
    one, other = made(), made()
    path = config_path(script(one))
    late = other.application.extensions["pxeserver"].registry
    stale = late.get(MAC_TYPE.parse(MAC))
    assert stale is not None and stale.config_issued is None
    assert one.get(path, environ_base=HERE).status_code == 200
    late.get = lambda mac: stale  # what it read before the first config was recorded
    r = other.get(path, environ_base=HERE)
    assert r.status_code == 403 and "handed out already" in r.text
    assert refused_events(one) == ["refused: second fetch of the same config (possible spoofing)"]


def test_a_second_use_written_behind_its_answer_shows_in_the_timeline(made: Any) -> None:
    """A worker whose memory had not seen the first use serves the config again; when its
    step is written, the registry records that instead of dropping it (docs/SECURITY.md,
    "Once"). Written before an answer, the same change records nothing: the caller refuses."""
    client = made()
    registry = client.application.extensions["pxeserver"].registry
    mac = MAC_TYPE.parse(MAC)
    assert fetch_config(client, MAC, environ_base=HERE).status_code == 200
    before = registry.get(mac)
    assert before is not None and before.config_issued
    again = Change(EventKind.CLOUD_CONFIG, "profile coreos", config_issued=before.config_issued)
    registry.apply(mac, again)
    assert registry.get(mac).events == before.events  # the control: nothing recorded
    registry.apply(mac, dataclasses.replace(again, answered=True))
    after = registry.get(mac)
    assert after.events[-1].detail == (
        "profile coreos; served again for a used secret (possible spoofing)"
    )
    assert after.state is before.state and after.config_issued == before.config_issued


def test_a_busy_worker_does_not_make_another_workers_newer_secret_look_used() -> None:
    """Issue times never repeat in one worker, and still keep with the clock when it
    issues many scripts at once: a machine that boots again half a second later, with its
    script from the other worker, is served (with times in milliseconds, 2,000 scripts in
    one millisecond put the first worker's times 2 s ahead, and this was refused)."""
    clock = Clock()
    key = lambda: b"k" * 32  # noqa: E731
    busy, other = FetchSecrets(key, 600, clock=clock), FetchSecrets(key, 600, clock=clock)
    mac = MAC_TYPE.parse(MAC)
    issued = [busy.check(m, busy.issue(m, "192.0.2.9"), "192.0.2.9")
              for m in (MAC_TYPE.parse(f"52:54:00:00:{n >> 8:02x}:{n & 255:02x}")
                        for n in range(2000))]  # fmt: skip
    assert len(set(issued)) == 2000  # never the same time twice, the clock standing still
    first = busy.check(mac, busy.issue(mac, "192.0.2.50"), "192.0.2.50")
    busy.claim(mac, first, None)  # its config served, and recorded as used
    clock.now += 0.5
    again = other.check(mac, other.issue(mac, "192.0.2.50"), "192.0.2.50")
    other.claim(mac, again, first)  # the next boot's config: not refused as used
    assert again > first


@pytest.mark.parametrize("address", ["192.0.2.50", "2001:db8::7", None])
def test_a_secret_is_the_documented_hmac_sha256_of_mac_address_and_time(
    address: str | None,
) -> None:
    """The tag, computed as the module docstring says with the standard library's HMAC
    object: secrets issued before and after the one-call HMAC are the same bytes."""
    import base64
    import hashlib
    import hmac

    key, mac = b"k" * 40, MAC_TYPE.parse(MAC)
    fetch = FetchSecrets(lambda: key, 600, clock=lambda: 1_800_000_000.25)
    secret = fetch.issue(mac, address)
    issued = 1_800_000_000_250_000
    packed = ipaddress.ip_address(address).packed.hex() if address else "-"
    mac_ = hmac.new(key, f"{mac.value}|{packed}|{issued}".encode(), hashlib.sha256)
    tag = base64.urlsafe_b64encode(mac_.digest()[:16]).decode().rstrip("=")
    assert secret == f"{issued:x}.{packed}.{tag}"
    assert fetch.check(mac, secret, address) == issued


def test_the_packed_addresses_are_bounded_and_packed_alike() -> None:
    from pxeserver import fetchsecret

    for i in range(fetchsecret.PACKED_KEPT + 100):
        address = f"10.0.{i >> 8 & 255}.{i & 255}" if i % 2 else f"2001:db8::{i:x}"
        expected = ipaddress.ip_address(address).packed.hex()
        assert fetchsecret._pack(address) == expected
        assert fetchsecret._pack(address) == expected
        assert len(fetchsecret._packed) <= fetchsecret.PACKED_KEPT
    assert fetchsecret._pack("not an address") == fetchsecret._pack(None) == "-"
    assert "not an address" not in fetchsecret._packed
