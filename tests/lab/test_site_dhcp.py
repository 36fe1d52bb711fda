"""The site's own DHCP server carries the boot options and pxeserver runs ``--no-dhcp``.

For each of dnsmasq, ISC dhcpd and Kea, one lab (tests/lab/site_dhcp.py) runs that server
with exactly the snippet docs/NETBOOT.md prints for it, and boots three machines at once:
SeaBIOS with the NIC's iPXE ROM, OVMF's own PXE client and OVMF's HTTP boot client. Each
must reach ``ready``; the capture of the segment shows that every DHCP answer came from
the site's server and which boot file it named for each machine.

No firmware here runs the snippets' plain-PXE BIOS line (``undionly.kpxe``): the BIOS
machine's NIC ROM is iPXE already, and Debian ships no other PXE ROM (docs/NETBOOT.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeserver.dhcp import packets as dp

from .conftest import LAB_PROFILES
from .dhcp_wire import messages, replies_to
from .harness import SERVER_IP, SITE_IP
from .site_dhcp import DOC_SERVER, SERVERS, SiteDhcpLab, program
from .test_boot import BOOT_TIMEOUT, assert_steps_in_order, kinds, seconds_to_ready
from .vm import VM

# The firmware of the three machines, and what the site's server must have named as their
# boot file on the wire: the firmware's loader first, then iPXE's chain script.
BOOT_FILES = {
    "bios": {f"http://{DOC_SERVER}/boot.ipxe"},  # the NIC's ROM is iPXE already
    "uefi": {"snponly.efi", f"http://{DOC_SERVER}/boot.ipxe"},
    "uefi-http": {f"http://{DOC_SERVER}/boot/ipxe.efi", f"http://{DOC_SERVER}/boot.ipxe"},
}
LABELS = {"bios": "BIOS, iPXE ROM", "uefi": "UEFI, OVMF PXE", "uefi-http": "UEFI, OVMF HTTP boot"}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def site_lab(request: pytest.FixtureRequest, lab_support: None,
             node_image: Path) -> Iterator[SiteDhcpLab]:  # fmt: skip
    server = SERVERS[request.param]
    if program(server) is None:
        pytest.fail(f"no {server.program}: the lab needs the Debian package {server.package} "
                    "(scripts/setup test installs it)")  # fmt: skip
    settings = {
        "server": {"dhcp": False, "http_port": 8080},
        "cluster": {"heartbeat_interval": 5, "heartbeat_ttl": 120, "boot_timeout": 600},
        "profiles": LAB_PROFILES,
        "groups": [{"name": "default", "profile": "lab"}],
    }
    lab = SiteDhcpLab(node_image, settings, server).start()
    yield lab
    lab.stop()


def assert_the_site_answered(lab: SiteDhcpLab, vm: VM) -> None:
    """On the wire: every DHCP answer to ``vm`` came from the site's server, which named
    the boot files the doc's lines name for that firmware and no other."""
    why = lab.diagnose(vm)
    replies = replies_to(lab.capture, vm.mac)
    assert replies and {m.source for m in replies} == {SITE_IP}, f"{replies}\n{why}"
    named = {m.boot_file for m in replies if m.boot_file}
    assert named == BOOT_FILES[vm.firmware], f"{lab.server.name} named {named}\n{why}"
    for m in replies:
        if m.boot_file == "snponly.efi":  # over TFTP, from next-server: pxeserver
            assert m.packet.siaddr == SERVER_IP, f"next-server {m.packet.siaddr}\n{why}"
        if m.boot_file.endswith("/ipxe.efi"):  # UEFI HTTP boot wants option 60 back
            assert m.packet.options.get(dp.OPT_VENDOR_CLASS) == b"HTTPClient", why


def test_site_dhcp_server_boots_every_firmware(site_lab: SiteDhcpLab,
                                              timings: dict[str, float]) -> None:  # fmt: skip
    lab = site_lab
    vms = [lab.add_vm(firmware) for firmware in BOOT_FILES]
    for vm in vms:
        vm.power_on()
    nodes = lab.wait_all(vms, {"ready"}, 2 * BOOT_TIMEOUT)

    # (test_http_boot.py finds pxeserver's ProxyDHCP offers in a capture made the same way)
    sent_by_pxeserver = [m for m in messages(lab.capture) if m.source == SERVER_IP]
    assert sent_by_pxeserver == [], f"pxeserver answered DHCP with --no-dhcp\n{lab.diagnose()}"
    for vm, node in zip(vms, nodes):
        why = lab.diagnose(vm)
        # No ProxyDHCP, so no dhcp event: the node's first sighting is its iPXE script.
        assert "dhcp" not in kinds(node), f"{kinds(node)}\n{why}"
        assert_steps_in_order(lab, vm, node, ["ipxe", "cloud-config", "ready"])
        assert node["platform"] == ("pcbios" if vm.firmware == "bios" else "efi"), node
        cmdline = vm.step("cmdline")
        assert cmdline is not None, why
        url = f"cloud-config-url=http://{DOC_SERVER}/cloud-config?mac={vm.mac}"
        assert url in cmdline["cmdline"], why
        assert_the_site_answered(lab, vm)
        label = f"{lab.server.name} (site DHCP): {LABELS[vm.firmware]}"
        timings[label] = seconds_to_ready(vm, node)
