"""The node page at ``/``: plain HTML, CSS and JavaScript from ``static/``, no build step.

The page reads the same API everyone else does (``/api/v1/nodes`` every two seconds, a
node's record and ``explain`` when one is opened), so it shows the same thing whichever
HTTP worker process answers: the store is what they share. It is read-only until an
operator types the API token; then it can assign a profile, set labels, rename or forget
a node, with the token sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

from flask import Blueprint, Response, send_from_directory

bp = Blueprint("page", __name__, static_folder="static", static_url_path="/ui")


@bp.get("/")
def index() -> Response:
    assert bp.static_folder is not None
    resp = send_from_directory(bp.static_folder, "index.html", max_age=0)
    resp.headers["Cache-Control"] = "no-cache"
    return resp
