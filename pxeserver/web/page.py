"""The node page at ``/``: plain HTML, CSS and JavaScript from ``static/``, no build step.

The page reads the same API everyone else does (one page of ``/api/v1/nodes``, sorted and
filtered by the server, every two seconds; a node's record and ``explain`` when one is
opened), so it shows the same thing whichever HTTP worker process answers: the store is
what they share. It is read-only until an operator types the API token; then it can assign
a profile, set labels, rename or forget a node, with the token sent as ``Authorization:
Bearer``.

Who may change nodes is said by the HTML itself: :func:`index` asks ``/api/v1/info``'s own
view, for this request, whether changes need the token and marks ``<body data-writes>``,
which chooses the banner's words (in ``index.html``) before any script runs. The first
paint is right, also with scripts off, and the banner follows whatever ``/api/v1/info``
answers.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

from . import explain

bp = Blueprint("page", __name__, static_folder="static", static_url_path="/ui")
MARK = '<body data-writes="">'


def writes_mark() -> str:
    """Which of the banner's words apply to this request's client (app.js's writesMark
    makes the same choice): ``open`` (anyone may change nodes), ``local`` (no API token and
    the browser is on this machine), ``nobody`` (no API token and the browser is elsewhere:
    changes come from this machine only) or ``token``."""
    info = explain.info().get_json()
    if info["writes"] == "anyone":
        return "open"
    if info["writes"] == "loopback":
        return "nobody" if info["writes_need_token"] else "local"
    return "token"


@bp.get("/")
def index() -> Response:
    assert bp.static_folder is not None
    html = (Path(bp.static_folder) / "index.html").read_text(encoding="utf-8")
    html = html.replace(MARK, f'<body data-writes="{writes_mark()}">', 1)
    resp = Response(html, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-cache"
    return resp
