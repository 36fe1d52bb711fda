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
import threading
from collections import OrderedDict
from pathlib import Path

from flask import Blueprint, Response, request, send_file

from ..checks import fetch_hint
from ..errors import NotFound
from ..hints import command
from ..model import MAC
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
        raise Missing(f"no asset {relative!r}")
    return Path(real)


class Missing(NotFound):
    """A file that would be inside the folder, but is not there."""


@bp.get("/assets/<path:relative>")
def asset(relative: str) -> Response:
    root = settings().paths.assets_dir
    try:
        path = confined(root, relative)
    except Missing:
        _first_miss(relative, root, fetch_hint(settings(), relative))
        raise
    return send_file(path, conditional=True, etag=True, max_age=300)


@bp.get("/boot/<path:relative>")
def loader(relative: str) -> Response:
    root = settings().paths.tftp_root
    try:
        path = confined(root, relative)
    except Missing:
        _first_miss(relative, root, f"run {command('assets ipxe')} to copy the boot loaders")
        raise
    return send_file(path, conditional=True, etag=True, max_age=300)


# -- what a 404 tells the operator ----------------------------------------------------------
# A machine whose kernel is missing loops: iPXE retries, fails, reboots. The first 404 for
# a file is logged (once a file in each HTTP worker: a loop must not flood the log), with
# the machine that asked when this worker served its iPXE script.

MAX_KEPT = 1024
_missed: set[str] = set()
_clients: OrderedDict[str, MAC] = OrderedDict()  # address → MAC of its last iPXE script
_lock = threading.Lock()


def remember_client(address: str | None, mac: MAC) -> None:
    """The machine at ``address`` just fetched its iPXE script (its kernel comes next)."""
    if not address:
        return
    with _lock:
        _clients[address] = mac
        _clients.move_to_end(address)
        while len(_clients) > MAX_KEPT:
            _clients.popitem(last=False)


def _first_miss(relative: str, root: Path, fix: str) -> None:
    with _lock:
        if relative in _missed or len(_missed) >= MAX_KEPT:
            return
        _missed.add(relative)
        mac = _clients.get(request.remote_addr or "")
    who = f"{mac} at {request.remote_addr}" if mac else str(request.remote_addr)
    fields = {"mac": str(mac)} if mac else {}
    log.warning("%s asked for %s, which is not in %s (404; the next 404s for it are not "
                "logged): %s", who, relative, root, fix, extra=fields)  # fmt: skip
