"""Files served from disk: kernels, initrds and other boot assets under ``/assets/``, and
boot loaders from the TFTP root under ``/boot/`` (``ipxe.efi`` for UEFI HTTP boot: ProxyDHCP
answers arch 16 with ``http://<server>:<port>/boot/ipxe.efi``).

Confined to their folder: ``..``, absolute paths and symlinks that lead outside it are
answered 404 as if the file did not exist. Werkzeug's ``send_file`` decides the answer:
Content-Length, Range requests (206, 416), ETag and Last-Modified, and the conditional
requests (If-None-Match, If-Modified-Since, If-Range, If-Match). In ``serve`` the RSGI
entrance asks it for that decision alone (:func:`file_answer`) and has granian send the
bytes from the file, without a Python buffer or a worker thread; the Flask views below
(the app run in-process, as the tests do) send them through Werkzeug's file wrapper.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.utils import send_file

from ..checks import fetch_hint
from ..config import Settings
from ..errors import NotFound
from ..hints import command
from ..model import MAC
from .context import settings

log = logging.getLogger(__name__)
bp = Blueprint("files", __name__)

MAX_AGE_S = 300


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


def respond(path: Path, environ: dict[str, Any], *, sendfile: bool = False) -> Response:
    """Werkzeug's answer for the file (conditional, with ranges). With ``sendfile`` the
    file is not opened: the answer carries ``X-Sendfile`` and the caller sends it."""
    try:
        return send_file(path, environ, conditional=True, etag=True, max_age=MAX_AGE_S,  # type: ignore[return-value]
                         use_x_sendfile=sendfile, response_class=Response)  # fmt: skip
    except RequestedRangeNotSatisfiable as exc:
        return exc.get_response(environ)  # type: ignore[return-value]


@dataclass(frozen=True)
class FileAnswer:
    """What to send for a file: a status and headers, and the bytes from ``start`` to
    ``end`` (exclusive) of the file, or no body (``end`` None: 304, 412, 416, HEAD)."""

    status: int
    headers: list[tuple[str, str]]
    start: int = 0
    end: int | None = None
    body: bytes = b""  # an answer without the file (416's page)


def file_answer(path: Path, environ: dict[str, Any]) -> FileAnswer:
    """The decision of :func:`respond` for ``path``, to be sent by someone else."""
    resp = respond(path, environ, sendfile=True)
    headers = [(k, v) for k, v in resp.headers.items() if k.lower() != "x-sendfile"]
    if resp.status_code not in (200, 206):
        return FileAnswer(resp.status_code, headers, body=b"".join(resp.response))  # type: ignore[arg-type]
    length = int(resp.headers["Content-Length"])
    start = 0
    if resp.status_code == 206:  # Content-Range: bytes START-END/SIZE
        start = int(resp.headers["Content-Range"].split(" ", 1)[1].split("-", 1)[0])
    return FileAnswer(resp.status_code, headers, start, start + length)


def locate(s: Settings, prefix: str, relative: str, remote: str | None) -> Path:
    """The file ``relative`` names under the folder of ``prefix`` (``/assets/``: the assets,
    ``/boot/``: the TFTP root), or NotFound; a missing file's first 404 is logged with what
    to do (see :func:`_first_miss`)."""
    root = s.paths.assets_dir if prefix == "/assets/" else s.paths.tftp_root
    try:
        return confined(root, relative)
    except Missing:
        fix = (fetch_hint(s, relative) if prefix == "/assets/"
               else f"run {command('assets ipxe')} to copy the boot loaders")  # fmt: skip
        _first_miss(relative, root, fix, remote)
        raise


@bp.get("/assets/<path:relative>")
def asset(relative: str) -> Response:
    return respond(locate(settings(), "/assets/", relative, request.remote_addr), request.environ)


@bp.get("/boot/<path:relative>")
def loader(relative: str) -> Response:
    return respond(locate(settings(), "/boot/", relative, request.remote_addr), request.environ)


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


def _first_miss(relative: str, root: Path, fix: str, remote: str | None) -> None:
    with _lock:
        if relative in _missed or len(_missed) >= MAX_KEPT:
            return
        _missed.add(relative)
        mac = _clients.get(remote or "")
    who = f"{mac} at {remote}" if mac else str(remote)
    fields = {"mac": str(mac)} if mac else {}
    log.warning("%s asked for %s, which is not in %s (404; the next 404s for it are not "
                "logged): %s", who, relative, root, fix, extra=fields)  # fmt: skip
