"""Writes the golden DHCP packets in this folder (run it to regenerate them).

These are CRAFTED, not captured: each is built field by field from RFC 2131/2132 (BOOTP
header, options), RFC 4578 (options 93, 94, 97) and the PXE 2.1 specification (option 60
``PXEClient:Arch:xxxxx:UNDI:yyyzzz``), with the options and their order as the named
firmware sends them as far as their documentation and source say. Replace each by a real
capture from the lab (issue 4: QEMU with SeaBIOS + iPXE ROM, OVMF) when it exists; the
tests read only the .hex files, so a capture dropped in under the same name just works.

    python tests/data/dhcp/craft.py
"""

from __future__ import annotations

import uuid
from pathlib import Path

from pxeserver.dhcp.packets import request_packet
from pxeserver.model import MAC

HERE = Path(__file__).resolve().parent
UUID = uuid.UUID("6fb9d0e1-3c2a-4e1b-8f00-00000000abcd")
GUID = b"\x00" + UUID.bytes_le  # type 0, EFI byte order
SITE_SERVER = bytes([192, 0, 2, 1])
OFFERED = bytes([192, 0, 2, 50])


def opt(code: int, value: bytes) -> tuple[int, bytes]:
    return code, value


PXE_PARAMS = bytes([1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 67,
                    128, 129, 130, 131, 132, 133, 134, 135])  # fmt: skip
EFI_PARAMS = bytes([1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50,
                    51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134,
                    135])  # fmt: skip
IPXE_PARAMS = bytes([1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131,
                     132, 133, 134, 135, 175, 203])  # fmt: skip

PACKETS: dict[str, tuple[str, dict[int, bytes], dict[str, str]]] = {
    # A BIOS PXE ROM (PXE 2.1, UNDI 2.1): DISCOVER with arch 0.
    "bios-pxe-discover": (
        "52:54:00:00:00:01",
        {
            53: b"\x01",
            57: b"\x04\xec",
            55: PXE_PARAMS,
            97: GUID,
            94: b"\x01\x02\x01",
            93: b"\x00\x00",
            60: b"PXEClient:Arch:00000:UNDI:002001",
        },
        {},
    ),
    # iPXE (undionly.kpxe, or the NIC's iPXE ROM under SeaBIOS): user class iPXE, option 175.
    "bios-ipxe-discover": (
        "52:54:00:00:00:02",
        {
            53: b"\x01",
            57: b"\x05\xc0",
            93: b"\x00\x00",
            94: b"\x01\x02\x01",
            60: b"PXEClient:Arch:00000:UNDI:002001",
            77: b"iPXE",
            55: IPXE_PARAMS,
            175: b"\xb1\x05\x01\x80\x86\x10\x0e\x13\x01\x01\x11\x01\x01\x27\x01\x01",
            61: b"\x01\x52\x54\x00\x00\x00\x02",
            97: GUID,
        },
        {},
    ),
    # EDK2/OVMF's own PXE client on x86-64 (arch 7), UNDI 3.0.
    "uefi-pxe-discover": (
        "52:54:00:00:00:03",
        {
            53: b"\x01",
            57: b"\x05\xc0",
            55: EFI_PARAMS,
            97: GUID,
            94: b"\x01\x03\x00",
            93: b"\x00\x07",
            60: b"PXEClient:Arch:00007:UNDI:003000",
        },
        {},
    ),
    # The same firmware's REQUEST to the site's DHCP server (broadcast, port 67).
    "uefi-pxe-request-site": (
        "52:54:00:00:00:03",
        {
            53: b"\x03",
            57: b"\x05\xc0",
            55: EFI_PARAMS,
            97: GUID,
            94: b"\x01\x03\x00",
            93: b"\x00\x07",
            60: b"PXEClient:Arch:00007:UNDI:003000",
            50: OFFERED,
            54: SITE_SERVER,
        },
        {},
    ),
    # Its boot-server REQUEST to the ProxyDHCP on port 4011, from its new address.
    "uefi-pxe-request-4011": (
        "52:54:00:00:00:03",
        {
            53: b"\x03",
            57: b"\x05\xc0",
            55: EFI_PARAMS,
            97: GUID,
            94: b"\x01\x03\x00",
            93: b"\x00\x07",
            60: b"PXEClient:Arch:00007:UNDI:003000",
        },
        {"ciaddr": "192.0.2.50"},
    ),
    # UEFI HTTP boot (arch 16): vendor class HTTPClient.
    "uefi-http-discover": (
        "52:54:00:00:00:04",
        {
            53: b"\x01",
            57: b"\x05\xc0",
            55: EFI_PARAMS,
            97: GUID,
            94: b"\x01\x03\x01",
            93: b"\x00\x10",
            60: b"HTTPClient:Arch:00016:UNDI:003001",
        },
        {},
    ),
    # arm64 UEFI (arch 11).
    "arm64-pxe-discover": (
        "52:54:00:00:00:05",
        {
            53: b"\x01",
            57: b"\x05\xc0",
            55: EFI_PARAMS,
            97: GUID,
            94: b"\x01\x03\x00",
            93: b"\x00\x0b",
            60: b"PXEClient:Arch:00011:UNDI:003000",
        },
        {},
    ),
    # An architecture nobody serves (arch 2, EFI Itanium).
    "itanium-pxe-discover": (
        "52:54:00:00:00:06",
        {
            53: b"\x01",
            55: PXE_PARAMS,
            93: b"\x00\x02",
            94: b"\x01\x02\x01",
            60: b"PXEClient:Arch:00002:UNDI:002001",
        },
        {},
    ),
    # An ordinary Linux DHCP client (no option 60): not ours to answer.
    "linux-dhcp-discover": (
        "52:54:00:00:00:07",
        {
            53: b"\x01",
            55: bytes([1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42]),
            12: b"laptop",
            61: b"\x01\x52\x54\x00\x00\x00\x07",
        },
        {},
    ),
}


def main() -> None:
    for name, (mac, options, fields) in PACKETS.items():
        data = request_packet(MAC.parse(mac), options, **fields)
        text = data.hex()
        lines = [text[i : i + 64] for i in range(0, len(text), 64)]
        (HERE / f"{name}.hex").write_text("\n".join(lines) + "\n")
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
