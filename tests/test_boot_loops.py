"""Boot loops: a node whose profile installs to disk boots from disk once it phoned home
ready, instead of reinstalling at every boot; a profile that runs from RAM network-boots
every time; an operator can have a node reinstall. Through the real Flask app and the
SQLite store, with ProxyDHCP's sightings going through the boot policy's writer as they
do in ``serve`` (a sighting makes the node ``discovered`` again before its script is
asked for: the reason the node's state alone cannot decide).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pxeserver import config
from pxeserver.boot import BootService
from pxeserver.daemon import make_service
from pxeserver.model import MAC, EventKind, Machine
from pxeserver.store.sqlite import SQLiteStore
from pxeserver.web import create_app

from .support.cli import run, write
from .support.server import ServerProcess
from .support.settings import LAB_PROFILES, REPO, make_settings
from .support.web import config_path, issued_config

NODE = "52:54:00:0d:15:c0"
TOKEN = "operator-secret-1"
DISK_PROFILES = {
    **LAB_PROFILES,
    "install": {**LAB_PROFILES["coreos"], "install": "disk"},
    "install-b": {**LAB_PROFILES["coreos"], "install": "disk"},
}


@pytest.fixture
def disk_site(tmp_path: Path) -> Iterator[tuple[Any, BootService]]:
    settings = make_settings(
        tmp_path,
        {
            "profiles": DISK_PROFILES,
            "groups": [
                {"name": "default", "profile": "coreos"},
                {"name": "installers", "profile": "install", "selectors": {"role": "disk"}},
            ],
            "server": {"api_token": TOKEN},
        },
    )
    store = SQLiteStore(tmp_path / "var" / "pxeserver.db")
    service = make_service(settings, store)
    service.start_background()
    app = create_app(settings, service)
    app.config["TESTING"] = True
    yield app.test_client(), service
    service.stop_background()
    store.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def dhcp(service: BootService, mac: str = NODE) -> None:
    """A PXE DISCOVER seen by ProxyDHCP, written as serve writes it."""
    service.note_dhcp(Machine(MAC.parse(mac), arch="x86_64"), "DISCOVER on port 67: BIOS")
    assert service.flush_background(10)


def node_token(client: Any, mac: str = NODE) -> str:
    text = issued_config(client, mac).text  # for the secret of its last script
    doc = yaml.safe_load(text)
    units = {u["name"]: u for u in doc["coreos"]["units"]}
    content = units["pxeserver-ready.service"]["content"]
    return str(content.split("Authorization: Bearer ")[1].split('"')[0])


def ready(client: Any, token: str, mac: str = NODE) -> None:
    r = client.post(f"/api/v1/nodes/{mac}/ready", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def power_on(client: Any, service: BootService, mac: str = NODE) -> str:
    """What a machine's firmware and iPXE do at power-on: DHCP, then its iPXE script."""
    dhcp(service, mac)
    r = client.get(f"/ipxe?mac={mac}&arch=x86_64&platform=pcbios")
    assert r.status_code == 200, r.text
    return str(r.text)


def show(client: Any, mac: str = NODE) -> Any:
    return client.get(f"/api/v1/nodes/{mac}").json


def metric(client: Any, series: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def assign_disk_profile(client: Any, mac: str = NODE) -> None:
    r = client.patch(f"/api/v1/nodes/{mac}", json={"labels": {"role": "disk"}}, headers=AUTH)
    assert r.status_code == 200, r.text


def test_an_installed_node_boots_from_disk_until_an_operator_asks_for_a_reinstall(
    disk_site: tuple[Any, BootService],
) -> None:
    client, service = disk_site
    dhcp(service)
    assign_disk_profile(client)
    # First boot: the installer is network-booted, it installs and phones home ready.
    first = power_on(client, service)
    assert "\nkernel " in first and "\nexit" not in first
    token = node_token(client)
    ready(client, token)
    n = show(client)
    assert n["installed"] == "install" and n["installed_at"].endswith("Z")
    assert n["events"][-1]["detail"] == (
        "profile install installed on disk: later boots start from it"
    )
    # Every later boot: the same DHCP sighting, then `exit` with the reason as a comment.
    from_disk = metric(client, 'pxeserver_boots_from_disk_total{profile="install"}')
    for boot in (2, 3):
        script = power_on(client, service)
        assert script.startswith("#!ipxe\n") and script.rstrip().endswith("\nexit"), script
        assert "kernel" not in script and "initrd" not in script
        assert "# why: profile 'install' installs to disk and this node phoned home ready" in (
            script
        )
        n = show(client)
        assert n["boot_count"] == boot  # a boot from disk is still a boot
        assert n["state"] == "booting"  # until the installed OS phones home
        assert n["events"][-1]["detail"] == "profile install: told to boot from disk"
        ready(client, token)  # the installed OS's units phone home at each boot
        assert show(client)["state"] == "ready"
        assert show(client)["events"][-1]["detail"] == "profile install, from its disk"
    assert metric(client, 'pxeserver_boots_from_disk_total{profile="install"}') == from_disk + 2
    # explain says which choice and why
    e = client.get(f"/api/v1/nodes/{NODE}/explain").json
    assert e["boot_from_disk"] is True and "phoned home ready" in e["boot_why"]
    assert e["ipxe"].rstrip().endswith("exit")
    # The operator wants it reinstalled: with the API token only.
    assert client.patch(f"/api/v1/nodes/{NODE}", json={"reinstall": True}).status_code == 401
    r = client.patch(f"/api/v1/nodes/{NODE}", json={"reinstall": True}, headers=AUTH)
    assert r.status_code == 200 and r.json["installed"] is None
    assert (
        "set reinstall: the next boot installs from the network (the disk holds 'install')"
        in (r.json["events"][-1]["detail"])
    )
    again = power_on(client, service)
    assert "\nkernel " in again and "\nexit" not in again
    assert show(client)["boot_count"] == 4
    ready(client, token)
    assert show(client)["installed"] == "install"
    assert power_on(client, service).rstrip().endswith("exit")


def test_a_profile_that_runs_from_ram_network_boots_every_time(
    disk_site: tuple[Any, BootService],
) -> None:
    client, service = disk_site
    power_on(client, service)
    token = node_token(client)
    for boot in (1, 2, 3):
        if boot > 1:
            script = power_on(client, service)
            assert "\nkernel " in script and "\nexit" not in script, script
        ready(client, token)
        n = show(client)
        assert n["installed"] is None and n["boot_count"] == boot and n["state"] == "ready"
    e = client.get(f"/api/v1/nodes/{NODE}/explain").json
    assert e["boot_from_disk"] is False
    assert e["boot_why"] == "profile 'coreos' runs from RAM (install: ram): network boot"


def test_a_lost_node_still_boots_from_disk(tmp_path: Path) -> None:
    # The old rule (boot from disk while the node's state is ready) reinstalled every node
    # whose heartbeats had lapsed, e.g. after a power cut: the record decides, not the state.
    raw = {"profiles": DISK_PROFILES, "groups": [{"name": "d", "profile": "install"}]}
    settings = make_settings(tmp_path, raw)
    clock = [1_000_000.0]
    store = SQLiteStore(tmp_path / "n.db")
    service = make_service(settings, store)
    service.registry.clock = lambda: clock[0]
    client = create_app(settings, service).test_client()
    client.get(f"/ipxe?mac={NODE}")
    ready(client, node_token(client))
    clock[0] += settings.cluster.heartbeat_ttl + 1
    assert [n.mac.value for n in service.registry.expire()] == [NODE]
    assert show(client)["state"] == "lost"
    assert client.get(f"/ipxe?mac={NODE}").text.rstrip().endswith("exit")
    store.close()


def test_another_disk_profile_installs_and_a_ram_profile_leaves_the_disk_alone(
    disk_site: tuple[Any, BootService],
) -> None:
    client, service = disk_site
    dhcp(service)
    assign_disk_profile(client)
    power_on(client, service)
    token = node_token(client)
    ready(client, token)
    # an operator assigns another profile that installs to disk: it is installed
    client.patch(f"/api/v1/nodes/{NODE}", json={"profile": "install-b"}, headers=AUTH)
    why = client.get(f"/api/v1/nodes/{NODE}/explain").json["boot_why"]
    assert why == (
        "profile 'install-b' installs to disk; the disk holds 'install', not it: "
        "network boot to install it"
    )
    assert "\nkernel " in power_on(client, service)
    ready(client, token)
    assert show(client)["installed"] == "install-b"
    # a RAM profile network-boots and does not claim the disk
    client.patch(f"/api/v1/nodes/{NODE}", json={"profile": "coreos"}, headers=AUTH)
    assert "\nkernel " in power_on(client, service)
    ready(client, token)
    assert show(client)["installed"] == "install-b"
    # back to the profile on the disk: from disk again
    client.patch(f"/api/v1/nodes/{NODE}", json={"profile": "install-b"}, headers=AUTH)
    assert power_on(client, service).rstrip().endswith("exit")


def test_pxelinux_gets_localboot_for_an_installed_node(
    disk_site: tuple[Any, BootService],
) -> None:
    client, service = disk_site
    dhcp(service)
    assign_disk_profile(client)
    machine = Machine(MAC.parse(NODE))
    assert "KERNEL" in service.pxelinux_config(machine, "http://h")
    ready(client, node_token(client))
    text = service.pxelinux_config(machine, "http://h")
    assert "LOCALBOOT 0" in text and "KERNEL" not in text
    assert text.startswith("# boot from disk: profile 'install' installs to disk")
    assert show(client)["boot_count"] == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"reinstall": "yes"}, "reinstall must be true"),
        ({"reinstall": 1}, "reinstall must be true"),
    ],
)
def test_a_bad_reinstall_is_400(
    disk_site: tuple[Any, BootService], body: Any, message: str
) -> None:
    client, service = disk_site
    dhcp(service)
    r = client.patch(f"/api/v1/nodes/{NODE}", json=body, headers=AUTH)
    assert r.status_code == 400 and message in r.json["error"], r.json


def test_install_is_validated_and_the_old_key_still_read(tmp_path: Path) -> None:
    base = {"kernel": "k", "cloud_config": "coreos.yaml.j2"}
    raw = {"profiles": {"p": {**base, "install": "usb"}}, "groups": [{"name": "d", "profile": "p"}]}
    _, problems = config.parse(raw, "x.yaml", None)
    assert [str(p) for p in problems if not p.warning] == [
        "x.yaml: profiles.p.install: is 'usb' — use one of: ram, disk"
    ]
    old = {**raw, "profiles": {"p": {**base, "boot_from_disk_when_ready": True}}}
    settings, problems = config.parse(old, "x.yaml", None)
    assert settings.profiles["p"].install == "disk"
    assert [str(p) for p in problems] == [
        "x.yaml: profiles.p.boot_from_disk_when_ready: warning: is the old name of install — "
        "write install: disk instead"
    ]
    # the shipped profiles run from RAM
    defaults, _ = config.load(None, {}, environ={})
    assert {p.install for p in defaults.profiles.values()} == {"ram"}


def test_check_and_render_say_it(tmp_path: Path) -> None:
    raw: dict[str, Any] = {
        "profiles": {"p": {"kernel": "k", "cloud_config": "coreos.yaml.j2", "install": "usb"}},
        "groups": [{"name": "d", "profile": "p"}],
        "paths": {
            "templates_dir": str(REPO / "cloud-configs"),
            "data_dir": str(tmp_path / "var"),
        },
    }
    r = run("check", "--config", str(write(tmp_path, raw)), cwd=tmp_path)
    assert r.returncode == 1 and "profiles.p.install: is 'usb' — use one of: ram, disk" in r.stderr
    raw["profiles"]["p"]["install"] = "disk"
    path = write(tmp_path, raw)
    settings, _ = config.load(path, {})
    store = SQLiteStore(settings.sqlite_path)
    service = make_service(settings, store)
    client = create_app(settings, service).test_client()
    client.get(f"/ipxe?mac={NODE}")
    r = run("render", "--config", str(path), "--mac", NODE, cwd=tmp_path)
    assert "# boots from the network: profile 'p' installs to disk and is not installed" in (
        r.stdout
    ), r.stdout + r.stderr
    ready(client, node_token(client))
    store.close()
    r = run("render", "--config", str(path), "--mac", NODE, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "# boots from the local disk: profile 'p' installs to disk and this node" in r.stdout
    ipxe = r.stdout.split("# --- iPXE script ---\n")[1].split("\n# --- cloud-config")[0]
    assert ipxe.startswith("#!ipxe\n# pxeserver: 52:54:00:0d:15:c0 (node-001) boots from its")
    assert ipxe.rstrip().endswith("\nexit"), ipxe


def test_the_cli_shows_the_install_and_asks_for_a_reinstall(tmp_path: Path) -> None:
    settings = {
        "server": {"listen": "127.0.0.1", "dhcp": False, "tftp": False, "api_token": TOKEN},
        "paths": {
            "data_dir": str(tmp_path / "var"),
            "templates_dir": str(REPO / "cloud-configs"),
        },
        "profiles": DISK_PROFILES,
        "groups": [{"name": "d", "profile": "install"}],
    }
    server = ServerProcess(tmp_path, settings=settings).start()
    try:
        status, _, body = server.get(f"/ipxe?mac={NODE}")
        assert status == 200 and b"\nkernel " in body
        _, _, text = server.get(config_path(body.decode()))
        token = text.decode().split("Authorization: Bearer ")[1].split('"')[0]
        status, _, _ = server.request(
            "POST", f"/api/v1/nodes/{NODE}/ready", headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 200
        cli = ("nodes", "--server", server.url)
        shown = run(*cli, "show", NODE, cwd=tmp_path)
        assert "installed:   install on its disk since " in shown.stdout, shown.stdout
        assert "(boots of it start from disk)" in shown.stdout
        assert server.get(f"/ipxe?mac={NODE}")[2].rstrip().endswith(b"\nexit")
        refused = run(*cli, "set", NODE, "--reinstall", cwd=tmp_path)
        assert refused.returncode == 1 and "401" in refused.stderr
        done = run(*cli, "--token", TOKEN, "set", NODE, "--reinstall", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"{NODE} node-001: its next boot installs install again" in done.stdout
        assert "installed:   - (network boot)" in run(*cli, "show", NODE, cwd=tmp_path).stdout
        assert b"\nkernel " in server.get(f"/ipxe?mac={NODE}")[2]
    finally:
        server.stop()


def test_check_warns_of_a_disk_profile_that_never_phones_home(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "cloud-configs", templates)
    (templates / "quiet.yaml.j2").write_text(
        "#cloud-config\nhostname: {{ node.hostname | yaml_scalar }}\n"
    )
    disk = {"kernel": "k", "install": "disk"}
    raw = {
        "profiles": {
            "quiet": {**disk, "cloud_config": "quiet.yaml.j2"},
            "nothing": disk,
            "coreos": {**disk, "cloud_config": "coreos.yaml.j2"},
            "flatcar": {**disk, "cloud_config": "flatcar.yaml.j2"},
            "ignition": {**disk, "ignition": "flatcar.ign.j2"},
            "ram": {"kernel": "k", "cloud_config": "quiet.yaml.j2"},
        },
        "groups": [{"name": "d", "profile": "coreos"}],
        "paths": {"templates_dir": str(templates), "data_dir": str(tmp_path / "var")},
    }
    r = run("check", "--config", str(write(tmp_path, raw)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if ".install:" in line]
    keys = [line.split(": ")[1] for line in warned]
    assert sorted(keys) == ["profiles.nothing.install", "profiles.quiet.install"], warned
    assert all("the install is never recorded and the node reinstalls" in w for w in warned)


def test_an_install_phoned_home_during_a_store_outage_is_journalled_and_kept(
    tmp_path: Path,
) -> None:
    # A disk install that finishes while etcd is down: the ready is journalled with what
    # the disk now holds, the cached node boots from disk at once, and the replay (from a
    # reopened journal, as after a restart) writes it to the store.
    from pxeserver.nodes.journal import Journal
    from pxeserver.nodes.registry import Change
    from pxeserver.nodes.resilient import Replayer, ResilientRegistry

    from .support.fakes import SwitchedStore

    settings = make_settings(
        tmp_path, {"profiles": DISK_PROFILES, "groups": [{"name": "d", "profile": "install"}]}
    )
    store = SwitchedStore(tmp_path / "store.db")
    service = make_service(settings, store, local=True)  # cache and journal in the data dir
    registry = service.registry
    assert isinstance(registry, ResilientRegistry)
    cache, journal = registry.cache, registry.journal
    registry.guarded.break_min = registry.guarded.break_max = 0.0
    mac = MAC.parse(NODE)
    registry.apply(mac, Change(EventKind.IPXE, "profile install", count_boot=True))
    token = registry.require(mac).token
    store.up = False
    assert service.phone_home(mac, token, EventKind.READY).installed == "install"
    assert journal.depth() == 1
    script = service.ipxe_script(Machine(mac), "http://h")  # from the cache, journalled
    assert script.rstrip().endswith("\nexit")
    journal.close()
    store.up = True
    registry.guarded._down_until = 0.0
    reopened = ResilientRegistry(store, cache, Journal(settings.paths.data_dir / "journal.db"))
    assert Replayer(reopened).replay() == 2
    stored = store.inner.get(mac)
    assert stored is not None and stored.node.installed == "install"
    assert stored.node.boot_count == 2 and stored.node.installed_at is not None
    reopened.journal.close()
    cache.close()
    store.close()
