"""Files served from disk: kernels, initrds and other boot assets under ``/assets/``, and
boot loaders from the TFTP root under ``/boot/`` (``ipxe.efi`` for UEFI HTTP boot: ProxyDHCP
answers arch 16 with ``http://<server>:<port>/boot/ipxe.efi``).

Confined to their folder: ``..``, absolute paths and symlinks that lead outside it are
answered 404 as if the file did not exist. Flask's ``send_file`` gives Content-Length,
Range requests, ETag and Last-Modified, and streams through the server's file wrapper.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Blueprint, Response, send_file

from ..errors import NotFound
from .context import settings

log = logging.getLogger(__name__)
bp = Blueprint("files", __name__)


def confined(root: Path, relative: str) -> Path:
    """The file ``relative`` names under ``root``, or NotFound if it is not inside it."""
    if "\0" in relative or relative.startswith("/") or "\\" in relative:
        raise NotFound(f"no asset {relative!r}")
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise NotFound(f"no asset {relative!r}")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, *parts))
    if os.path.commonpath([real_root, real]) != real_root:
        log.warning("refused asset %r: it leads outside %s", relative, root)
        raise NotFound(f"no asset {relative!r}")
    if not os.path.isfile(real):
        raise NotFound(f"no asset {relative!r}")
    return Path(real)


@bp.get("/assets/<path:relative>")
def asset(relative: str) -> Response:
    return send_file(confined(settings().paths.assets_dir, relative), conditional=True,
                     etag=True, max_age=300)  # fmt: skip


@bp.get("/boot/<path:relative>")
def loader(relative: str) -> Response:
    return send_file(confined(settings().paths.tftp_root, relative), conditional=True,
                     etag=True, max_age=300)  # fmt: skip
