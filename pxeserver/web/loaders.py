"""Boot loaders over HTTP: ``/boot/<name>`` serves the TFTP root's files (``ipxe.efi``…).

UEFI HTTP boot (ProxyDHCP answers arch 16 with ``http://<server>:<port>/boot/ipxe.efi``)
fetches its loader here instead of over TFTP. Confined to the TFTP root like the assets.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, send_file

from ..config import Settings
from .assets import confined

bp = Blueprint("loaders", __name__)


@bp.get("/boot/<path:relative>")
def loader(relative: str) -> Response:
    settings: Settings = current_app.extensions["pxeserver.settings"]
    path = confined(settings.paths.tftp_root, relative)
    return send_file(path, conditional=True, etag=True, max_age=300)
