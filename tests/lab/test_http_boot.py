"""UEFI HTTP boot: OVMF's own HTTP boot client, answered by pxeserver's ProxyDHCP, to ready.

Debian 12's OVMF (2022.11) is built with HTTP boot (docs/NETBOOT.md, "UEFI HTTP boot").
QEMU cannot pick one of a NIC's UEFI boot options (PXE and HTTP, over IPv4 and IPv6; PXE
first), so the VM switches OVMF's PXE clients off through fw_cfg (tests/lab/vm.py,
HTTP_BOOT_ONLY) and HTTPv4 goes first. The firmware asks DHCP with vendor class
``HTTPClient`` and arch 16; pxeserver's ProxyDHCP answers with option 60 ``HTTPClient``
and the URL of ``ipxe.efi`` (UEFI 2.x, "HTTP Boot": EDK2 drops an offer without an
address unless its option 60 starts with ``HTTPClient``, and takes the boot file as a
URI); the firmware fetches ``ipxe.efi`` over HTTP, and iPXE chains the rest. No TFTP.
"""

from __future__ import annotations

from pxeserver.dhcp import packets as dp

from .dhcp_wire import replies_to, requests_from
from .harness import SERVER_IP, SITE_IP, Lab
from .test_boot import assert_console_agrees, assert_steps_in_order, boot_one, seconds_to_ready

LOADER_URL = f"http://{SERVER_IP}/boot/ipxe.efi"


def test_uefi_http_boot_through_proxydhcp(lab: Lab, timings: dict[str, float]) -> None:
    vm, node = boot_one(lab, "uefi-http")
    why = lab.diagnose(vm)
    assert node["platform"] == "efi" and node["arch"] == "x86_64", node
    assert_steps_in_order(lab, vm, node, ["dhcp", "ipxe", "cloud-config", "ready"])
    assert_console_agrees(lab, vm, node)
    details = [e["detail"] for e in node["events"]]
    assert any(f"HTTP boot (arch 16) → {LOADER_URL}" in d for d in details), f"{details}\n{why}"
    # HTTP all the way: the UEFI PXE scenario in the same kind of lab records its TFTP
    # transfer of snponly.efi as a tftp event; here there is none.
    assert not any(e["kind"] == "tftp" for e in node["events"]), f"{node['events']}\n{why}"
    serial = vm.serial_log.read_text(errors="replace")
    assert 'starting Boot0001 "UEFI HTTPv4' in serial, f"not the HTTP boot option\n{why}"
    assert f"URI: {LOADER_URL}" in serial, f"the firmware's own HTTP boot did not run\n{why}"

    # On the wire: the firmware asked as an HTTP boot client ...
    asked = [m.packet for m in requests_from(lab.capture, vm.mac)]
    http = [p for p in asked if p.vendor_class.startswith("HTTPClient:Arch:00016")]
    assert http and all(p.client_arch == 16 for p in http), f"{[p.vendor_class for p in asked]}"
    # ... and pxeserver's offer is what the spec asks for: no address, option 60 exactly
    # "HTTPClient", the boot file a URL; the site's offer carried no boot file at all.
    offers = [m for m in replies_to(lab.capture, vm.mac) if m.packet.xid == http[0].xid]
    ours = [m.packet for m in offers if m.source == SERVER_IP]
    assert ours, f"no ProxyDHCP offer to the HTTP boot DISCOVER\n{why}"
    for offer in ours:
        assert offer.message_type == dp.OFFER and offer.yiaddr == "0.0.0.0", offer
        assert offer.options.get(dp.OPT_VENDOR_CLASS) == b"HTTPClient", offer.options
        assert offer.file.decode() == LOADER_URL, offer
        assert dp.OPT_VENDOR not in offer.options, "PXE options (43) in an HTTP boot offer"
    assert all(not m.boot_file for m in offers if m.source == SITE_IP), offers
    timings["UEFI, OVMF HTTP boot (ProxyDHCP)"] = seconds_to_ready(vm, node)
