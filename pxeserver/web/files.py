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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.utils import send_file

from ..errors import NotFound
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
        raise NotFound(f"no asset {relative!r}")
    return Path(real)


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


@bp.get("/assets/<path:relative>")
def asset(relative: str) -> Response:
    return respond(confined(settings().paths.assets_dir, relative), request.environ)


@bp.get("/boot/<path:relative>")
def loader(relative: str) -> Response:
    return respond(confined(settings().paths.tftp_root, relative), request.environ)
