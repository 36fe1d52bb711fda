"""ProxyDHCP's packet code against DHCP packets captured from real firmware in the lab.

The files are in tests/data/dhcp/captured/ (see its README): SeaBIOS's iPXE ROM, OVMF's
own PXE and HTTP boot clients and iPXE's snponly.efi, as they booted through pxeserver
under QEMU.
"""

from __future__ import annotations

import pytest

from pxeserver.dhcp import packets as dp
from pxeserver.dhcp.proxy import Loaders, Offer, choose, is_pxe_client, machine_of

from ..support.dhcp import captured_bytes


def captured(name: str) -> dp.DhcpPacket:
    return dp.parse(captured_bytes(name))


def loaders() -> Loaders:
    return Loaders(http_base=lambda host: f"http://{host}")


@pytest.mark.parametrize(
    ("name", "message_type", "arch", "ipxe"),
    [
        ("bios-ipxe-discover", dp.DISCOVER, 0, True),
        ("uefi-pxe-discover", dp.DISCOVER, 7, False),
        ("uefi-pxe-request-site", dp.REQUEST, 7, False),
        ("uefi-pxe-request-4011", dp.REQUEST, 7, False),
        ("uefi-ipxe-discover", dp.DISCOVER, 7, True),
        ("uefi-http-discover", dp.DISCOVER, 16, False),
    ],
)
def test_real_firmware_packets_parse(name: str, message_type: int, arch: int, ipxe: bool) -> None:
    p = captured(name)
    assert p.op == dp.BOOTREQUEST and p.message_type == message_type
    assert p.client_arch == arch and p.is_ipxe is ipxe
    assert is_pxe_client(p)
    assert p.mac.value.startswith("52:54:00:")
    # QEMU's -uuid, as the firmware read it from SMBIOS and sent it in option 97
    assert p.client_uuid == f"5ee1ab00-0000-4000-8000-{p.mac.hex}"


@pytest.mark.parametrize(
    ("name", "boot_file"),
    [
        ("bios-ipxe-discover", "http://192.0.2.1/boot.ipxe"),
        ("uefi-pxe-discover", "snponly.efi"),
        ("uefi-pxe-request-4011", "snponly.efi"),
        ("uefi-ipxe-discover", "http://192.0.2.1/boot.ipxe"),
    ],
)
def test_each_firmware_is_told_its_boot_file(name: str, boot_file: str) -> None:
    offer = choose(captured(name), "192.0.2.1", loaders())
    assert isinstance(offer, Offer), offer
    assert (offer.boot_file, offer.vendor_class) == (boot_file, "PXEClient")


def test_the_request_to_the_site_teaches_the_address() -> None:
    p = captured("uefi-pxe-request-site")
    assert p.requested_ip is not None and p.requested_ip.startswith("192.0.2.")
    machine = machine_of(p, p.mac)
    assert (machine.arch, machine.platform, machine.ip) == ("x86_64", "efi", p.requested_ip)
    assert captured("uefi-pxe-request-4011").ciaddr.startswith("192.0.2.")


def test_uefi_http_boot_is_told_a_url_with_httpclient() -> None:
    p = captured("uefi-http-discover")
    assert p.vendor_class == "HTTPClient:Arch:00016:UNDI:003000"
    offer = choose(p, "192.0.2.1", loaders())
    assert offer == Offer("http://192.0.2.1/boot/ipxe.efi", "HTTPClient",
                          "UEFI x86-64 HTTP boot (arch 16)")  # fmt: skip
