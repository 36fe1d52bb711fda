"""DHCP packet parsing and building against the golden packets in tests/data/dhcp/."""

from __future__ import annotations

import struct

import pytest

from pxeserver.dhcp import packets as dp
from pxeserver.dhcp.proxy import Loaders, Offer, choose, is_pxe_client, machine_of
from pxeserver.model import MAC

from ..support.dhcp import UUID, golden


def loaders(**kw: object) -> Loaders:
    return Loaders(http_base=lambda host: f"http://{host}:8080", **kw)  # type: ignore[arg-type]


def test_bios_pxe_discover_reads_as_the_firmware_sent_it() -> None:
    p = dp.parse(golden("bios-pxe-discover"))
    assert p.op == dp.BOOTREQUEST and p.message_type == dp.DISCOVER
    assert p.mac == MAC.parse("52:54:00:00:00:01")
    assert p.client_arch == 0 and p.client_uuid == UUID
    assert p.vendor_class == "PXEClient:Arch:00000:UNDI:002001"
    assert is_pxe_client(p) and not p.is_ipxe
    m = machine_of(p, MAC.parse("52:54:00:00:00:01"))
    assert (m.arch, m.platform, m.uuid, m.ip) == ("i386", "pcbios", UUID, None)


@pytest.mark.parametrize(
    ("name", "boot_file", "vendor"),
    [
        ("bios-pxe-discover", "undionly.kpxe", "PXEClient"),
        ("bios-ipxe-discover", "http://192.0.2.1:8080/boot.ipxe", "PXEClient"),
        ("uefi-pxe-discover", "snponly.efi", "PXEClient"),
        ("uefi-pxe-request-4011", "snponly.efi", "PXEClient"),
        ("uefi-http-discover", "http://192.0.2.1:8080/boot/ipxe.efi", "HTTPClient"),
    ],
)
def test_boot_file_follows_the_firmware(name: str, boot_file: str, vendor: str) -> None:
    offer = choose(dp.parse(golden(name)), "192.0.2.1", loaders())
    assert isinstance(offer, Offer)
    assert (offer.boot_file, offer.vendor_class) == (boot_file, vendor)


def test_uefi_loader_setting_and_arm64_presence() -> None:
    uefi = dp.parse(golden("uefi-pxe-discover"))
    offer = choose(uefi, "192.0.2.1", loaders(uefi_loader="ipxe.efi"))
    assert isinstance(offer, Offer) and offer.boot_file == "ipxe.efi"
    arm = dp.parse(golden("arm64-pxe-discover"))
    why = choose(arm, "192.0.2.1", loaders())
    assert isinstance(why, str) and "ipxe-arm64.efi" in why and "arm64" in why
    offer = choose(arm, "192.0.2.1", loaders(arm64=True))
    assert isinstance(offer, Offer) and offer.boot_file == "ipxe-arm64.efi"


def test_unknown_arch_and_non_pxe_clients() -> None:
    why = choose(dp.parse(golden("itanium-pxe-discover")), "192.0.2.1", loaders())
    assert isinstance(why, str) and "unknown client architecture 2" in why
    assert not is_pxe_client(dp.parse(golden("linux-dhcp-discover")))


def test_site_request_teaches_the_address() -> None:
    p = dp.parse(golden("uefi-pxe-request-site"))
    assert p.message_type == dp.REQUEST and p.requested_ip == "192.0.2.50"
    assert machine_of(p, MAC.parse("52:54:00:00:00:03")).ip == "192.0.2.50"
    p4011 = dp.parse(golden("uefi-pxe-request-4011"))
    assert p4011.ciaddr == "192.0.2.50"


def test_reply_never_carries_an_address() -> None:
    request = dp.parse(golden("uefi-pxe-discover"))
    raw = dp.build_reply(request, message_type=dp.OFFER, server_ip="192.0.2.1",
                         boot_file="snponly.efi")  # fmt: skip
    reply = dp.parse(raw)
    assert reply.op == dp.BOOTREPLY and reply.message_type == dp.OFFER
    assert reply.yiaddr == "0.0.0.0" and reply.ciaddr == "0.0.0.0"
    assert reply.xid == request.xid and reply.chaddr == request.chaddr
    assert reply.file == b"snponly.efi" and reply.siaddr == "192.0.2.1"
    assert reply.options[dp.OPT_SERVER_ID] == bytes([192, 0, 2, 1])
    assert reply.vendor_class == "PXEClient"
    assert dp.OPT_VENDOR not in reply.options  # UEFI: boot-server discovery left on
    assert reply.options[dp.OPT_CLIENT_UUID] == request.options[dp.OPT_CLIENT_UUID]
    assert dp.OPT_BOOTFILE in reply.options  # EDK2 asks for option 67 in option 55


def test_bios_offer_tells_the_rom_to_skip_discovery() -> None:
    request = dp.parse(golden("bios-pxe-discover"))
    offer = choose(request, "192.0.2.1", loaders())
    assert isinstance(offer, Offer) and offer.bypass_discovery
    uefi = choose(dp.parse(golden("uefi-pxe-discover")), "192.0.2.1", loaders())
    assert isinstance(uefi, Offer) and not uefi.bypass_discovery
    reply = dp.parse(dp.build_reply(request, message_type=dp.OFFER, server_ip="192.0.2.1",
                                    boot_file="undionly.kpxe", bypass_discovery=True))  # fmt: skip
    assert reply.options[dp.OPT_VENDOR] == bytes((6, 1, 8, 255))  # discovery control: bypass


def test_long_boot_file_goes_into_option_67() -> None:
    request = dp.parse(golden("bios-pxe-discover"))
    url = "http://192.0.2.1:8080/" + "x" * 200
    reply = dp.parse(dp.build_reply(request, message_type=dp.OFFER, server_ip="192.0.2.1",
                                    boot_file=url))  # fmt: skip
    assert reply.file == b"" and reply.options[dp.OPT_BOOTFILE] == url.encode()


def test_repeated_options_are_joined() -> None:
    raw = dp.request_packet(MAC.parse("52:54:00:00:00:09"), {53: b"\x01"})
    extra = bytes([60, 4]) + b"PXEC" + bytes([60, 5]) + b"lient" + b"\xff"
    p = dp.parse(raw[:-1] + extra)
    assert p.vendor_class == "PXEClient"


def header_with(file: bytes = b"", sname: bytes = b"") -> bytes:
    raw = bytearray(dp.request_packet(MAC.parse("52:54:00:00:00:09"), {53: b"\x01"}))
    raw[108 : 108 + len(file)] = file
    raw[44 : 44 + len(sname)] = sname
    return bytes(raw[:240])


def test_overload_reads_file_and_sname() -> None:
    file = bytes([60, 9]) + b"PXEClient" + b"\xff"
    sname = bytes([93, 2, 0, 7, 255])
    raw = header_with(file, sname) + bytes([53, 1, 1, 52, 1, 3, 255])
    p = dp.parse(raw)
    assert p.vendor_class == "PXEClient" and p.client_arch == 7 and p.file == b""


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "shorter than a DHCP header"),
        (golden("bios-pxe-discover")[:100], "shorter than a DHCP header"),
        (golden("bios-pxe-discover")[:236] + b"\x63\x82\x53\x64" + b"\xff", "magic cookie"),
        (header_with() + bytes([53, 1, 1, 60, 50]) + b"PXE", "claims 50 bytes"),
        (header_with() + bytes([53, 1, 1, 60]), "no length byte"),
        (header_with(bytes([52, 1, 1, 255])) + bytes([52, 1, 1, 255]), "inside the overloaded"),
        (header_with() + bytes([52, 1, 9, 255]), "bad value"),
        (header_with() + bytes([52, 2, 1, 1, 255]), "bad value"),
    ],
)
def test_bad_packets_are_refused_with_a_reason(raw: bytes, why: str) -> None:
    with pytest.raises(dp.PacketError, match=why):
        dp.parse(raw)


def test_a_hardware_address_longer_than_16_is_refused() -> None:
    raw = bytearray(golden("bios-pxe-discover"))
    raw[2] = 17
    with pytest.raises(dp.PacketError, match="hardware address length"):
        dp.parse(bytes(raw))


def test_uuid_of_zeros_is_no_uuid() -> None:
    raw = dp.request_packet(MAC.parse("52:54:00:00:00:09"), {53: b"\x01", 97: bytes(17)})
    assert dp.parse(raw).client_uuid is None
    assert struct.calcsize("!BBBBIHH4s4s4s4s16s64s128s") == 236
