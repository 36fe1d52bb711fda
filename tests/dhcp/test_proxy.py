"""The ProxyDHCP service on loopback: golden firmware packets in, answers parsed back."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeserver.boot import BootService
from pxeserver.daemon import make_service
from pxeserver.dhcp import packets as dp
from pxeserver.dhcp.proxy import ProxyDhcp, machine_of
from pxeserver.model import MAC

from ..support.dhcp import UUID, captured_bytes, exchange, golden, handled
from ..support.net import wait_for
from ..support.settings import make_settings


@pytest.fixture
def proxy(service: BootService, tmp_path: Path) -> Iterator[ProxyDhcp]:
    (tmp_path / "tftproot").mkdir(exist_ok=True)
    service.start_background()
    p = ProxyDhcp(service, address="127.0.0.1", dhcp_port=0, pxe_port=0,
                  tftp_root=tmp_path / "tftproot",
                  http_base=lambda host: f"http://{host}:8080").start()  # fmt: skip
    yield p
    p.stop()
    service.stop_background()


@pytest.mark.parametrize(
    ("name", "boot_file", "vendor"),
    [
        ("bios-pxe-discover", "undionly.kpxe", "PXEClient"),
        ("bios-ipxe-discover", "http://127.0.0.1:8080/boot.ipxe", "PXEClient"),
        ("uefi-pxe-discover", "snponly.efi", "PXEClient"),
        ("uefi-http-discover", "http://127.0.0.1:8080/boot/ipxe.efi", "HTTPClient"),
    ],
)
def test_discover_gets_an_offer_with_the_right_boot_file(
    proxy: ProxyDhcp, name: str, boot_file: str, vendor: str
) -> None:
    request = golden(name)
    reply = exchange(proxy.ports["dhcp"], request)
    assert reply is not None, f"no answer to {name}"
    assert reply.message_type == dp.OFFER and reply.op == dp.BOOTREPLY
    assert reply.yiaddr == "0.0.0.0"
    assert reply.xid == dp.parse(request).xid
    assert reply.vendor_class == vendor
    assert reply.file == boot_file.encode() or reply.options.get(67) == boot_file.encode()
    assert reply.options[dp.OPT_SERVER_ID] == socket.inet_aton("127.0.0.1")
    # BIOS ROMs and iPXE are told to take this file; UEFI firmware asks on port 4011
    assert (dp.OPT_VENDOR in reply.options) == name.startswith("bios-")


def test_real_http_boot_firmware_gets_the_answer_the_uefi_spec_asks_for(proxy: ProxyDhcp) -> None:
    """OVMF's own HTTP boot DISCOVER, captured in the lab. UEFI 2.x, "HTTP Boot": an offer
    is for HTTP boot only with option 60 "HTTPClient" (EDK2 compares those 10 bytes), and
    its boot file is a URI; PXE's option 43 means nothing to it."""
    request = captured_bytes("uefi-http-discover")
    asked = dp.parse(request)
    reply = exchange(proxy.ports["dhcp"], request)
    assert reply is not None
    assert reply.message_type == dp.OFFER and reply.yiaddr == "0.0.0.0"
    assert reply.xid == asked.xid and reply.chaddr == asked.chaddr
    assert reply.options[dp.OPT_VENDOR_CLASS] == b"HTTPClient"
    url = b"http://127.0.0.1:8080/boot/ipxe.efi"
    assert reply.file == url
    assert dp.OPT_BOOTFILE in asked.options[dp.OPT_PARAMS]  # it asks for option 67 too
    assert reply.options[dp.OPT_BOOTFILE] == url
    assert dp.OPT_VENDOR not in reply.options
    assert reply.options[dp.OPT_CLIENT_UUID] == asked.options[dp.OPT_CLIENT_UUID]


def test_port_4011_request_gets_an_ack(proxy: ProxyDhcp) -> None:
    reply = handled(proxy, proxy.ports["pxe"], golden("uefi-pxe-request-4011"))
    assert reply is not None
    assert reply.message_type == dp.ACK and reply.yiaddr == "0.0.0.0"
    assert reply.file == b"snponly.efi" and reply.vendor_class == "PXEClient"
    assert reply.ciaddr == "192.0.2.50" and dp.OPT_VENDOR not in reply.options
    # a DISCOVER on the boot-server port is not answered there (the same exchange saw
    # the ACK above: the silence is not the helper's)
    assert handled(proxy, proxy.ports["pxe"], golden("uefi-pxe-discover")) is None


@pytest.mark.parametrize(
    "name", ["linux-dhcp-discover", "itanium-pxe-discover", "arm64-pxe-discover",
             "uefi-pxe-request-site"],
)  # fmt: skip
def test_what_is_not_ours_gets_no_answer(proxy: ProxyDhcp, name: str) -> None:
    assert handled(proxy, proxy.ports["dhcp"], golden(name)) is None
    assert proxy.counters["answered"] == 0
    # positive control: the same exchange gets the answer to what is ours
    assert handled(proxy, proxy.ports["dhcp"], golden("bios-pxe-discover")) is not None


def test_arm64_is_answered_once_its_loader_exists(proxy: ProxyDhcp, tmp_path: Path) -> None:
    (tmp_path / "tftproot" / "ipxe-arm64.efi").write_bytes(b"MZ")
    reply = exchange(proxy.ports["dhcp"], golden("arm64-pxe-discover"))
    assert reply is not None and reply.file == b"ipxe-arm64.efi"


def test_sightings_reach_the_registry(proxy: ProxyDhcp, service: BootService) -> None:
    assert exchange(proxy.ports["dhcp"], golden("uefi-pxe-discover")) is not None
    # (written before the next sighting: two sightings still queued merge into one write)
    wait_for(lambda: service.sightings.counters["queued"] == 1, 5, "the first sighting")
    assert service.flush_background(10)
    assert handled(proxy, proxy.ports["dhcp"], golden("uefi-pxe-request-site")) is None
    wait_for(lambda: service.machine_at("192.0.2.50") is not None, 5, "the second sighting")
    assert service.flush_background(10)
    node = service.registry.get(MAC.parse("52:54:00:00:00:03"))
    assert node is not None
    assert node.state.value == "discovered" and node.arch == "x86_64"
    assert node.platform == "efi" and node.uuid == UUID and node.ip == "192.0.2.50"
    assert [e.kind.value for e in node.events] == ["dhcp", "dhcp"]
    assert "UEFI x86-64 (arch 7) → snponly.efi" in node.events[0].detail
    # TFTP can now tie that address to the MAC
    seen = service.machine_at("192.0.2.50")
    assert seen is not None and seen.mac == MAC.parse("52:54:00:00:00:03")


def test_bad_packets_are_counted_and_the_loop_goes_on(proxy: ProxyDhcp) -> None:
    port = proxy.ports["dhcp"]
    good = golden("bios-pxe-discover")
    overload_loop = (
        good[:108]
        + bytes([52, 1, 1, 255])
        + good[112:236]
        + dp.MAGIC
        + bytes([53, 1, 1, 52, 1, 1, 255])
    )
    hostile = [b"", b"\x01", good[:200], good[:236] + b"nope" + good[240:],
               good[:-5] + bytes([60, 200, 1]), overload_loop, b"\xff" * 600]  # fmt: skip
    for raw in hostile:
        assert handled(proxy, port, raw) is None  # dropped, and nothing said
    reply = handled(proxy, port, good)  # the same exchange sees the answer to a good one
    assert reply is not None and reply.file == b"undionly.kpxe"
    assert proxy.counters["bad"] == len(hostile)


def test_excluded_and_unmatched_macs_get_no_answer(tmp_path: Path) -> None:
    from pxeserver.store.sqlite import SQLiteStore

    settings = make_settings(tmp_path, {
        "server": {"exclude_macs": ["52:54:00:00:00:01"]},
        "groups": [{"name": "uefi-only", "profile": "coreos", "selectors": {"platform": "efi"}}],
    })  # fmt: skip
    store = SQLiteStore(tmp_path / "s.db")
    service = make_service(settings, store)
    (tmp_path / "tftproot").mkdir()
    proxy = ProxyDhcp(service, address="127.0.0.1", dhcp_port=0, pxe_port=0,
                      tftp_root=tmp_path / "tftproot").start()  # fmt: skip
    try:
        assert handled(proxy, proxy.ports["dhcp"], golden("bios-pxe-discover")) is None
        excluded = machine_of(dp.parse(golden("bios-pxe-discover")), MAC.parse("52:54:00:00:00:01"))
        assert service.boot_refusal(excluded) == "excluded by server.exclude_macs"
        # a BIOS machine no group selects gets nothing; a UEFI one is answered
        bios = dp.request_packet(MAC.parse("52:54:00:00:00:0a"), dp.parse(
            golden("bios-pxe-discover")).options)  # fmt: skip
        assert handled(proxy, proxy.ports["dhcp"], bios) is None
        # positive control: the same exchange gets the answer a UEFI machine is given
        assert handled(proxy, proxy.ports["dhcp"], golden("uefi-pxe-discover")) is not None
    finally:
        proxy.stop()
        store.close()
