"""The seed's cluster, for real: racked machines join fleet, run work, and lose a node.

In the lab's namespace: a three-member etcd cluster with the v2 API on (fleet's API), and
pxeserver keeping its registry in the same cluster. Four VMs are racked at once, BIOS and
UEFI, booting the REAL node images (tests/lab/build-real-image.sh: Debian systemd systems
that run the real coreos-cloudinit and fleetd) through pxeserver's ProxyDHCP, TFTP and HTTP:

- ``cl-bios`` and ``cl-uefi``: the Container Linux flavour, served coreos.yaml.j2;
- ``fc-bios``: the Flatcar flavour, served flatcar.yaml.j2 (etcd and fleetd come from
  pxeserver's assets/bin/);
- ``fc-cut``: the Flatcar flavour too, but the lab drops everything it sends to the etcd
  members (nftables on its port of the bridge): its fleetd cannot reach etcd.

Everything is asserted from outside the VMs: fleet through the real fleetctl, pxeserver
through its API, the OS's own address from the serial console, the work from the access
log of the load-test target. The example workers (examples/fleet/) are started, one VM is
powered off, and fleet must move its worker while pxeserver marks the node ``lost``.
The times (power-on to ready, reschedule, lost) go to test-artifacts/lab/timings.json.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from pxeserver.model import MAC

from .conftest import NODE_ARGS
from .fleet import Fleetctl, FleetMachine, Target, nft
from .harness import ETCD_HOSTS, REPO, Lab, iso_time, seconds_to_ready
from .vm import VM

HEARTBEAT_INTERVAL_S = 5
HEARTBEAT_TTL_S = 30
# A booting or configured node silent this long is lost. Long enough for a healthy node
# of this lab (cloud-config to ready took 20-90 s here), short enough to wait for the cut
# node once.
BOOT_TIMEOUT_S = 240
VM_MEMORY_MB = 1536  # the whole OS runs from RAM
WAIT_READY_S = float(os.environ.get("PXELAB_FLEET_TIMEOUT", "600"))
WORKER = REPO / "examples" / "fleet" / "loadtest-worker@.service"
WORKERS = [f"loadtest-worker@{i}.service" for i in (1, 2, 3)]
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFleetLabKeyOnlyForTheTestsXXXXXXXXXXXXXXXX pxelab"

# name: (firmware, profile, MAC, rack label)
MACHINES = {
    "cl-bios": ("bios", "container-linux", "52:54:00:f1:00:01", "r1"),
    "cl-uefi": ("uefi", "container-linux", "52:54:00:f1:00:02", "r2"),
    "fc-bios": ("bios", "flatcar", "52:54:00:f1:00:03", "r3"),
    "fc-cut": ("bios", "flatcar", "52:54:00:f1:00:04", "r4"),
}
HEALTHY = ["cl-bios", "cl-uefi", "fc-bios"]
CUT = "fc-cut"


@dataclass
class Seed:
    lab: Lab
    fleet: Fleetctl
    target: Target
    vms: dict[str, VM]
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    placed: dict[str, str] = field(default_factory=dict)  # worker unit -> machine's address

    def vm_at(self, ip: str) -> str:
        for name, node in self.nodes.items():
            if node.get("ip") == ip:
                return name
        raise AssertionError(f"no node of the lab has address {ip}: {self.nodes}")


@pytest.fixture(scope="module")
def real_image() -> Path:
    out = subprocess.run(
        [str(REPO / "tests" / "lab" / "build-real-image.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        pytest.fail(f"tests/lab/build-real-image.sh failed:\n{out.stderr[-4000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def lab_settings() -> dict[str, Any]:
    profile = {"kernel": "real/vmlinuz", "args": NODE_ARGS}
    return {
        # systemd-networkd asks DHCP with a DUID, so the OS that fetches the config has
        # another lease than the firmware that fetched the script (asserted below): the
        # default server.config_fetch_from (network) serves it, as on a real site.
        "cluster": {
            "heartbeat_interval": HEARTBEAT_INTERVAL_S,
            "heartbeat_ttl": HEARTBEAT_TTL_S,
            "boot_timeout": BOOT_TIMEOUT_S,
            "fleet_metadata": {"region": "lab"},
            "ssh_authorized_keys": [SSH_KEY],
        },
        "profiles": {
            "container-linux": {
                **profile,
                "initrd": ["real/container-linux.cpio.zst"],
                "cloud_config": "coreos.yaml.j2",
            },
            "flatcar": {
                **profile,
                "initrd": ["real/flatcar.cpio.zst"],
                "cloud_config": "flatcar.yaml.j2",
                "metadata": {"etcd_binary": "bin/etcd", "fleetd_binary": "bin/fleetd"},
            },
        },
        "groups": [
            {
                "name": "flatcar",
                "profile": "flatcar",
                "selectors": {"mac": [m[2] for m in MACHINES.values() if m[1] == "flatcar"]},
            },
            {"name": "default", "profile": "container-linux"},
        ],
    }


@pytest.fixture(scope="module")
def seed(
    lab_support: None, node_image: Path, real_image: Path, timings: dict[str, Any]
) -> Iterator[Seed]:
    from tests.support.fleettools import fleet_tools

    tools = fleet_tools()
    assets = {
        "real/vmlinuz": real_image / "vmlinuz",
        "real/container-linux.cpio.zst": real_image / "container-linux.cpio.zst",
        "real/flatcar.cpio.zst": real_image / "flatcar.cpio.zst",
        # What flatcar.yaml.j2 fetches: the fleetd built here, Debian's etcd (3.4).
        "bin/fleetd": tools / "fleetd",
        "bin/etcd": Path(shutil.which("etcd") or "/usr/bin/etcd"),
    }
    lab = Lab(node_image, lab_settings(), "fleet", etcd_members=3, assets=assets).start()
    try:
        seed = Seed(lab, Fleetctl(lab, tools / "fleetctl"), Target(lab), {})
        for name, (firmware, _, mac, _) in MACHINES.items():
            seed.vms[name] = lab.add_vm(firmware, MAC.parse(mac), VM_MEMORY_MB)
        cut_off_from_etcd(lab, seed.vms[CUT])
        for vm in seed.vms.values():
            vm.power_on()
        label_on_discovery(seed)
        vms = [seed.vms[n] for n in HEALTHY]
        for name, node in zip(HEALTHY, lab.wait_all(vms, {"ready"}, WAIT_READY_S)):
            seed.nodes[name] = node
            timings[f"fleet: {name} ({MACHINES[name][1]}), real image"] = seconds_to_ready(
                seed.vms[name], node
            )
        yield seed
    finally:
        lab.stop()


def cut_off_from_etcd(lab: Lab, vm: VM) -> None:
    """Drop every packet ``vm`` sends to an etcd member: its fleetd cannot reach etcd."""
    members = ", ".join(ETCD_HOSTS)
    nft(
        lab,
        f"""table bridge pxlab_cut {{
  chain input {{
    type filter hook input priority 0;
    iifname "{vm.tap}" ip daddr {{ {members} }} drop
  }}
}}
""",
    )


def reconnect(lab: Lab) -> None:
    nft(lab, "delete table bridge pxlab_cut\n")


def label_on_discovery(seed: Seed) -> None:
    """An operator labels each machine as soon as pxeserver has seen it, before the OS
    fetches its cloud-config (which carries the labels as fleet metadata)."""
    pending = dict(seed.vms)
    deadline = time.monotonic() + WAIT_READY_S
    while pending and time.monotonic() < deadline:
        for name, vm in list(pending.items()):
            node = seed.lab.node(vm.mac)
            if node is None:
                continue
            assert node["state"] in ("discovered", "booting"), (
                f"{name} was {node['state']} before the lab could label it\n"
                + seed.lab.diagnose(vm)
            )
            status, body = seed.lab.api(
                "PATCH", f"/api/v1/nodes/{vm.mac}", {"labels": {"rack": MACHINES[name][3]}}
            )
            assert status == 200, body
            del pending[name]
        time.sleep(0.3)
    assert not pending, f"never seen by pxeserver: {sorted(pending)}\n{seed.lab.diagnose()}"


def wait_until(what: str, check: Any, timeout: float, why: Any = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{why() if callable(why) else why}")


def served_config(seed: Seed, vm: VM) -> dict[str, Any]:
    """The cloud-config the node was served, rendered again exactly as it got it."""
    status, body = seed.lab.api("GET", f"/api/v1/nodes/{vm.mac}/explain")
    assert status == 200, body
    return yaml.safe_load(body["cloud_config"])


def config_public_ip(config: dict[str, Any]) -> str:
    """fleet's public IP in a served config: coreos.fleet (Container Linux) or the
    /etc/fleet/fleet.conf that flatcar.yaml.j2 writes."""
    if "fleet" in config.get("coreos", {}):
        return str(config["coreos"]["fleet"]["public_ip"])
    for f in config.get("write_files", []):
        if f["path"] == "/etc/fleet/fleet.conf":
            m = re.search(r'^public_ip="([^"]*)"', f["content"], re.M)
            assert m, f["content"]
            return m.group(1)
    raise AssertionError(f"no fleet public IP in the served config: {config}")


def firmware_lease(node: dict[str, Any]) -> str | None:
    """The address pxeserver's ProxyDHCP saw the firmware take (its DHCP event)."""
    for event in node["events"]:
        m = re.search(r"ProxyDHCP saw it take (\S+)\)?$", event["detail"])
        if event["kind"] == "dhcp" and m:
            return m.group(1).rstrip(")")
    return None


def test_racked_machines_join_fleet_with_their_addresses_and_metadata(seed: Seed) -> None:
    lab = seed.lab
    machines = seed.fleet.machines()
    why = f"fleet lists {machines}\n{lab.diagnose()}"
    assert len(machines) == 3, why
    by_id: dict[str, FleetMachine] = {m.id: m for m in machines}
    for name in HEALTHY:
        vm, node = seed.vms[name], lab.node(seed.vms[name].mac)
        assert node is not None
        seed.nodes[name] = node
        console = vm.step("network")
        assert console is not None, f"{name} printed no network step\n{lab.diagnose(vm)}"
        os_ip, machine_id = console["ip"], console["machine_id"]
        assert machine_id in by_id, f"{name}'s machine {machine_id} is not in fleet\n{why}"
        fleet_ip = by_id[machine_id].ip
        config_ip = config_public_ip(served_config(seed, vm))
        # One address everywhere: what the OS has, what pxeserver records, what its
        # config names, what fleet advertises.
        assert os_ip == node["ip"] == config_ip == fleet_ip, (name, os_ip, node, config_ip, why)
        # Not the firmware's lease: the site's dnsmasq keys leases by client id, and
        # systemd-networkd asks with its DUID where the firmware said 01:MAC.
        firmware_ip = firmware_lease(node)
        assert firmware_ip and firmware_ip != os_ip, (name, firmware_ip, os_ip)
        assert by_id[machine_id].metadata == {"region": "lab", "rack": MACHINES[name][3]}, why
        assert node["profile"] == MACHINES[name][1], node
        assert node["labels"] == {"rack": MACHINES[name][3]}, node
        platform = "efi" if MACHINES[name][0] == "uefi" else "pcbios"
        assert node["platform"] == platform, node


def test_ready_only_after_own_registration_and_heartbeats_arrive(seed: Seed) -> None:
    lab = seed.lab
    for name in HEALTHY:
        vm = seed.vms[name]
        kinds = [e["kind"] for e in lab.node(vm.mac)["events"]]  # type: ignore[index]
        assert kinds.index("cloud-config") < kinds.index("ready"), kinds

        def beating(vm: VM = vm) -> bool:
            node = lab.node(vm.mac)
            beats = [e for e in node["events"] if e["kind"] == "heartbeat"] if node else []
            return bool(beats) and beats[-1].get("count", 1) >= 2

        wait_until(f"{name}: two heartbeats", beating, 6 * HEARTBEAT_INTERVAL_S, lab.diagnose)
    # The cut-off node fetched its config, but its own fleetd never registered.
    cut = lab.node(seed.vms[CUT].mac)
    assert cut is not None and cut["state"] == "configured", cut


def test_workers_spread_one_per_machine(seed: Seed, tmp_path: Path) -> None:
    unit = tmp_path / WORKER.name
    text = WORKER.read_text()
    assert "Environment=LOADTEST_TARGET=" in text
    target = f"Environment=LOADTEST_TARGET={seed.target.url}"
    unit.write_text(re.sub(r"^Environment=LOADTEST_TARGET=.*$", target, text, flags=re.M))
    seed.fleet("submit", str(unit))
    seed.fleet("start", "--no-block", *WORKERS)

    def spread() -> dict[str, str] | None:
        units = {u.name: u for u in seed.fleet.units() if u.name in WORKERS}
        if len(units) < 3 or any(u.active != "active" for u in units.values()):
            return None
        return {name: u.machine_ip for name, u in units.items()}

    placed = wait_until("three workers active", spread, 180, lambda: seed.fleet("list-units"))
    assert len(set(placed.values())) == 3, f"workers share a machine: {placed}"
    # The target sees each worker from the machine fleet placed it on.
    for worker, ip in placed.items():
        number = worker.split("@")[1].split(".")[0]

        def seen(number: str = number, ip: str = ip) -> bool:
            return any(
                client == ip and parse_qs(urlsplit(path).query).get("worker") == [number]
                for client, path in seed.target.requests()
            )

        wait_until(f"{worker} calling the target from {ip}", seen, 60, seed.target.log)
    seed.placed = placed


def test_node_whose_fleetd_cannot_reach_etcd_is_configured_then_lost(
    seed: Seed, timings: dict[str, Any]
) -> None:
    lab, vm = seed.lab, seed.vms[CUT]

    def lost() -> dict[str, Any] | None:
        node = lab.node(vm.mac)
        assert node is not None and node["state"] in ("configured", "lost"), node
        return node if node["state"] == "lost" else None

    node = wait_until(f"{CUT} lost", lost, BOOT_TIMEOUT_S + 120, lambda: lab.diagnose(vm))
    kinds = [e["kind"] for e in node["events"]]
    assert "ready" not in kinds and "cloud-config" in kinds, kinds
    event = node["events"][-1]
    assert event["kind"] == "lost" and "ready" in event["detail"], node["events"]
    # Repaired, the same node joins: its units were waiting, not failed.
    reconnect(lab)
    node = lab.wait_for(vm, {"ready"}, 300)
    assert len(seed.fleet.machines()) == 4, seed.fleet("list-machines")
    seed.nodes[CUT] = node


def test_dead_node_loses_its_worker_to_a_survivor_and_is_lost(
    seed: Seed, timings: dict[str, Any]
) -> None:
    lab = seed.lab
    placed = seed.placed
    assert placed, "the workers were not started (test_workers_spread_one_per_machine)"
    worker, ip = sorted(placed.items())[0]
    victim = seed.vm_at(ip)
    seed.vms[victim].kill()
    killed = time.time()

    def moved() -> dict[str, str] | None:
        # fleet may reshuffle on the way (seen: it put the dead machine's worker beside
        # another, then moved that one to the spare), so wait for the spread it settles
        # on: every worker active, each on its own surviving machine.
        units = {u.name: u for u in seed.fleet.units() if u.name in WORKERS}
        where = {name: u.machine_ip for name, u in units.items() if u.active == "active"}
        if len(where) < 3 or ip in where.values() or "" in where.values():
            return None
        return where if len(set(where.values())) == 3 else None

    settled = wait_until(
        f"{worker} moved off {victim}, one worker per machine",
        moved,
        180,
        lambda: seed.fleet("list-units"),
    )
    timings["fleet: worker rescheduled after power-off (s)"] = round(time.time() - killed, 1)
    number = worker.split("@")[1].split(".")[0]
    new_ip = settled[worker]

    def seen() -> bool:
        return any(
            client == new_ip and parse_qs(urlsplit(path).query).get("worker") == [number]
            for client, path in seed.target.requests()
        )

    wait_until(f"{worker} calling the target from {new_ip}", seen, 60, seed.target.log)

    def lost() -> dict[str, Any] | None:
        node = lab.node(seed.vms[victim].mac)
        return node if node and node["state"] == "lost" else None

    node = wait_until(f"{victim} lost", lost, HEARTBEAT_TTL_S + 90, lab.diagnose)
    event = node["events"][-1]
    timings["fleet: node lost after power-off (s)"] = round(iso_time(event["at"]) - killed, 1)
    assert iso_time(event["at"]) - iso_time(node["last_heartbeat"]) >= HEARTBEAT_TTL_S
