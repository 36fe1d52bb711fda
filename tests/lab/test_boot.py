"""Real firmware PXE-boots through pxeserver: BIOS and UEFI, one machine and four at once.

Each VM is QEMU (software emulation) on the lab's bridge, where dnsmasq hands out plain
addresses and pxeserver answers as ProxyDHCP, TFTP and HTTP server on the standard ports.
It boots the lab's node image, a stand-in for CoreOS (see tests/lab/node/init), which
fetches its cloud-config and phones home. Assertions are on the registry, through the
API; the serial console is read for what only the machine itself can tell (its kernel
command line, the hostname it took, its address).
"""

from __future__ import annotations

import os
from typing import Any

from pxeserver.model import MAC

from .conftest import TFTP_MAC
from .harness import Lab, iso_time, seconds_to_ready
from .vm import VM

# Seconds one machine may take, under TCG on a shared 2-core box (typical: 10-60).
BOOT_TIMEOUT = float(os.environ.get("PXELAB_BOOT_TIMEOUT", "300"))
STEPS = ["dhcp", "tftp", "ipxe", "cloud-config", "ready"]


def kinds(node: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in node["events"]]


def first_index(node: dict[str, Any], kind: str, why: str) -> int:
    found = kinds(node)
    assert kind in found, f"{node['mac']}: no {kind} event in its timeline {found}\n{why}"
    return found.index(kind)


def assert_steps_in_order(lab: Lab, vm: VM, node: dict[str, Any], steps: list[str]) -> None:
    """Each step is in the timeline, the first of each after the first of the one before,
    with times that never go backwards."""
    why = lab.diagnose(vm)
    positions = [first_index(node, kind, why) for kind in steps]
    assert positions == sorted(positions), (
        f"{vm.name}: steps out of order: {list(zip(steps, positions))} in {kinds(node)}\n{why}"
    )
    times = [iso_time(e["at"]) for e in node["events"]]
    assert times == sorted(times), f"{vm.name}: event times go backwards: {node['events']}"


def assert_console_agrees(lab: Lab, vm: VM, node: dict[str, Any]) -> None:
    """What the machine says it got is what the registry says it gave."""
    why = lab.diagnose(vm)
    hostname = vm.step("hostname")
    assert hostname is not None, f"{vm.name} printed no hostname step\n{why}"
    assert hostname["name"] == node["hostname"], why
    dhcp = vm.step("dhcp")
    assert dhcp is not None and dhcp["mac"] == str(vm.mac), why
    cmdline = vm.step("cmdline")
    assert cmdline is not None, why
    assert f"cloud-config-url=http://192.0.2.1/cloud-config?mac={vm.mac}" in cmdline["cmdline"]
    ready = vm.wait_step("ready")
    assert ready is not None and '"state":"ready"' in ready["answer"].replace(" ", ""), why


def boot_one(lab: Lab, firmware: str, mac: str | None = None) -> tuple[VM, dict[str, Any]]:
    vm = lab.add_vm(firmware, MAC.parse(mac) if mac else None)
    vm.power_on()
    return vm, lab.wait_for(vm, {"ready"}, BOOT_TIMEOUT)


def test_bios_ipxe_rom_boots_to_ready(lab: Lab, timings: dict[str, float]) -> None:
    vm, node = boot_one(lab, "bios")
    assert node["platform"] == "pcbios", node
    assert node["profile"] == "lab" and node["boot_count"] == 1, node
    assert_steps_in_order(lab, vm, node, ["dhcp", "ipxe", "cloud-config", "ready"])
    assert_console_agrees(lab, vm, node)
    assert node["ip"] == vm.step("dhcp")["ip"], lab.diagnose(vm)
    timings["BIOS, iPXE ROM"] = seconds_to_ready(vm, node)


def test_uefi_firmware_pxe_boots_to_ready(lab: Lab, timings: dict[str, float]) -> None:
    vm, node = boot_one(lab, "uefi")
    why = lab.diagnose(vm)
    assert node["platform"] == "efi" and node["arch"] == "x86_64", node
    # The firmware's own PXE client: ProxyDHCP, then TFTP of the iPXE EFI loader, then HTTP.
    assert_steps_in_order(lab, vm, node, STEPS)
    tftp = [e["detail"] for e in node["events"] if e["kind"] == "tftp"]
    assert any(d.startswith("snponly.efi") for d in tftp), f"{tftp}\n{why}"
    assert_console_agrees(lab, vm, node)
    # Under UEFI the kernel finds its initramfs only when it is named on its command line.
    assert "initrd=initrd.cpio.gz" in vm.step("cmdline")["cmdline"], why
    timings["UEFI, OVMF PXE"] = seconds_to_ready(vm, node)


def test_four_machines_at_once(lab: Lab, timings: dict[str, float]) -> None:
    vms = [lab.add_vm("uefi") for _ in range(4)]
    for vm in vms:
        vm.power_on()
    nodes = lab.wait_all(vms, {"ready"}, 2 * BOOT_TIMEOUT)
    hostnames = [n["hostname"] for n in nodes]
    assert len(set(hostnames)) == 4, f"hostnames not distinct: {hostnames}\n{lab.diagnose()}"
    for vm, node in zip(vms, nodes):
        assert_steps_in_order(lab, vm, node, STEPS)
        assert_console_agrees(lab, vm, node)
    status, body = lab.api("GET", "/api/v1/nodes?state=ready")
    assert status == 200, body
    ready_macs = {n["mac"] for n in body["nodes"]}
    assert {str(vm.mac) for vm in vms} <= ready_macs, body
    timings["4 x UEFI at once (slowest)"] = max(seconds_to_ready(v, n) for v, n in zip(vms, nodes))


def test_operator_profile_gives_its_kernel_args(lab: Lab, timings: dict[str, float]) -> None:
    vm, node = boot_one(lab, "bios")
    assert "pxelab.profile=operator" not in vm.step("cmdline")["cmdline"]
    status, body = lab.api(
        "PATCH",
        f"/api/v1/nodes/{vm.mac}",
        {"profile": "lab-operator", "labels": {"rack": "r7"}},
    )
    assert status == 200, body
    assert body["profile"] == "lab-operator" and body["profile_source"] == "operator", body
    vm.stop()
    vm.power_on()
    node = lab.wait_for(vm, {"ready"}, BOOT_TIMEOUT, since_boot=2)
    why = lab.diagnose(vm)
    assert node["profile"] == "lab-operator", node
    assert node["boot_count"] == 2, node
    cmdline = vm.step("cmdline")["cmdline"].split()
    assert "pxelab.profile=operator" in cmdline, why
    assert "pxelab.rack=r7" in cmdline, why  # a kernel argument rendered from its labels
    timings["BIOS, operator's profile (2nd boot)"] = seconds_to_ready(vm, node)


def test_same_machine_twice_keeps_hostname(lab: Lab, timings: dict[str, float]) -> None:
    vm, first = boot_one(lab, "bios")
    vm.stop()
    vm.power_on()
    second = lab.wait_for(vm, {"ready"}, BOOT_TIMEOUT, since_boot=2)
    assert second["hostname"] == first["hostname"], (first, second)
    assert second["boot_count"] == 2, second
    assert second["first_seen"] == first["first_seen"], "a new record instead of the same node"
    assert vm.step("hostname")["name"] == first["hostname"], lab.diagnose(vm)
    assert kinds(second).count("ready") == 2, kinds(second)
    status, body = lab.api("GET", "/api/v1/nodes")
    assert status == 200, body
    assert [n["mac"] for n in body["nodes"]].count(str(vm.mac)) == 1, body
    timings["BIOS, second boot"] = seconds_to_ready(vm, second)


def test_kernel_and_initrd_over_tftp(lab: Lab, timings: dict[str, float]) -> None:
    vm, node = boot_one(lab, "bios", TFTP_MAC)
    why = lab.diagnose(vm)
    assert node["profile"] == "lab-tftp", node
    tftp = [e["detail"] for e in node["events"] if e["kind"] == "tftp"]
    assert any("vmlinuz" in d for d in tftp), f"no TFTP event for the kernel: {tftp}\n{why}"
    assert any("initrd" in d for d in tftp), f"no TFTP event for the initrd: {tftp}\n{why}"
    assert_steps_in_order(lab, vm, node, ["ipxe", "tftp", "cloud-config", "ready"])
    assert_console_agrees(lab, vm, node)
    timings["BIOS, kernel+initrd over TFTP"] = seconds_to_ready(vm, node)
