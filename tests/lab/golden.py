"""Pick real firmware DHCP packets out of a lab capture, as golden files for ProxyDHCP tests.

    python -m tests.lab.golden test-artifacts/lab/<run>/dhcp.pcap tests/data/dhcp

writes the first packet of each kind found, as tests/data/dhcp/ keeps them (the DHCP
message without IP/UDP headers, in hex, 64 digits a line):

    bios-ipxe-discover.hex      DISCOVER of iPXE as the NIC's option ROM under SeaBIOS
    uefi-pxe-discover.hex       DISCOVER of OVMF's own UEFI PXE client
    uefi-pxe-request-site.hex   OVMF's REQUEST to the site's DHCP server (port 67)
    uefi-pxe-request-4011.hex   OVMF's boot-server REQUEST to port 4011
    uefi-ipxe-discover.hex      DISCOVER of iPXE's EFI loader (snponly.efi) once it runs
    uefi-http-discover.hex      DISCOVER of OVMF's own UEFI HTTP boot client (HTTPClient)

A kind not in the capture is reported and skipped.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

from .sniff import read_pcap, udp_payload

MAGIC = b"\x63\x82\x53\x63"
KINDS = (
    "bios-ipxe-discover",
    "uefi-pxe-discover",
    "uefi-pxe-request-site",
    "uefi-pxe-request-4011",
    "uefi-ipxe-discover",
    "uefi-http-discover",
)


def options(msg: bytes) -> dict[int, bytes]:
    """The DHCP options of ``msg`` (the first instance of each code)."""
    found: dict[int, bytes] = {}
    at = 240
    if msg[236:240] != MAGIC:
        return found
    while at < len(msg):
        code = msg[at]
        if code == 255:
            break
        if code == 0:
            at += 1
            continue
        if at + 1 >= len(msg):
            break
        size = msg[at + 1]
        found.setdefault(code, msg[at + 2 : at + 2 + size])
        at += 2 + size
    return found


def kind(msg: bytes, dport: int) -> str | None:
    """Which golden packet ``msg`` is, if any."""
    if len(msg) < 240 or msg[0] != 1:
        return None
    opts = options(msg)
    vendor = opts.get(60, b"")
    arch = struct.unpack("!H", opts[93][:2])[0] if len(opts.get(93, b"")) >= 2 else None
    if vendor.startswith(b"HTTPClient") and arch == 16 and opts.get(53) == b"\x01":
        return "uefi-http-discover"
    if not vendor.startswith(b"PXEClient"):
        return None
    is_ipxe = 175 in opts or opts.get(77, b"") == b"iPXE"
    msg_type = opts.get(53, b"\x00")[0]
    if msg_type == 3 and arch == 7 and not is_ipxe:
        return "uefi-pxe-request-4011" if dport == 4011 else "uefi-pxe-request-site"
    if msg_type != 1:
        return None
    if arch == 0 and is_ipxe:
        return "bios-ipxe-discover"
    if arch == 7:
        return "uefi-ipxe-discover" if is_ipxe else "uefi-pxe-discover"
    return None


def extract(capture: Path, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for _, frame in read_pcap(capture):
        ihl = (frame[14] & 0x0F) * 4
        dport = struct.unpack("!H", frame[14 + ihl + 2 : 14 + ihl + 4])[0]
        msg = udp_payload(frame)
        name = kind(msg, dport)
        if name and name not in written:
            path = out / f"{name}.hex"
            text = msg.hex()
            path.write_text("\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + "\n")
            written[name] = path
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.lab.golden",
        description="Write the first DHCP packet of each kind in a lab capture as a golden file.",
    )
    parser.add_argument(
        "capture", type=Path, help="a lab capture, e.g. test-artifacts/lab/RUN/dhcp.pcap"
    )
    parser.add_argument("out", type=Path, help="the folder of golden files, e.g. tests/data/dhcp")
    args = parser.parse_args(argv)
    if not args.capture.is_file():
        parser.error(f"{args.capture} is not a file: give a capture the lab wrote (dhcp.pcap)")
    got = extract(args.capture, args.out)
    for name in KINDS:
        print(f"{name}: {got.get(name, 'not in this capture')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
