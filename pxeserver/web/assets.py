"""Kernels, initrds and other boot assets, streamed from the assets folder.

Confined to the folder: ``..``, absolute paths and symlinks that lead outside it are
answered 404 as if the file did not exist. Flask's ``send_file`` gives Content-Length,
Range requests, ETag and Last-Modified, and streams through the server's file wrapper.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Blueprint, Response, current_app, send_file

from ..config import Settings
from ..errors import NotFound

log = logging.getLogger(__name__)
bp = Blueprint("assets", __name__)


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
    settings: Settings = current_app.extensions["pxeserver.settings"]
    path = confined(settings.paths.assets_dir, relative)
    return send_file(path, conditional=True, etag=True, max_age=300)
