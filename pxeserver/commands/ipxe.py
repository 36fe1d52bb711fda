"""``pxeserver assets ipxe``: the iPXE boot loaders, copied from Debian's ``ipxe`` package.

Never committed, never downloaded by pxeserver: Debian ships them (``apt-get install
ipxe``) and this copies them into the TFTP root, where ProxyDHCP names them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import PxeError
from ..hints import command

DEBIAN_IPXE = Path("/usr/lib/ipxe")
# name in the TFTP root → where Debian keeps it (first found wins); arm64 only if shipped
LOADERS: dict[str, tuple[str, ...]] = {
    "undionly.kpxe": ("undionly.kpxe",),
    "ipxe.efi": ("ipxe.efi",),
    "snponly.efi": ("snponly.efi",),
    "ipxe-arm64.efi": ("arm64-efi/ipxe.efi", "ipxe-arm64.efi", "arm64/ipxe.efi"),
}
OPTIONAL = {"ipxe-arm64.efi"}


def copy_ipxe(target: Path, source: Path = DEBIAN_IPXE) -> list[str]:
    """Copy the loaders into ``target``; return one line per file. PxeError if any required
    one is missing, saying how to get it."""
    target.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, candidates in LOADERS.items():
        found = next((source / c for c in candidates if (source / c).is_file()), None)
        if found is None:
            if name in OPTIONAL:
                lines.append(f"{name}: not shipped by this ipxe package (arm64 machines get none)")
                continue
            raise PxeError(
                f"{source / candidates[0]} is missing: install Debian's ipxe package "
                f"(apt-get install ipxe), then run {command('assets ipxe')} again"
            )
        dest = target / name
        tmp = target / f".{name}.tmp"
        shutil.copyfile(found, tmp)
        tmp.replace(dest)  # atomic: a transfer in flight keeps the old file
        lines.append(f"{name}: {dest.stat().st_size} bytes from {found}")
    return lines
