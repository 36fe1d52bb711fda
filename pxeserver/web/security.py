"""Who may change things, and the headers every answer carries.

Every call that changes something (any method but GET, HEAD and OPTIONS) passes
:func:`guard_writes` before its view runs: the operator's rule of
:func:`.context.require_operator`, unless the view is one of the node's own calls
(``ready``, ``heartbeat``), which check the node's token instead. A new route is guarded
without anyone remembering to.

The headers keep the node page and the API out of other sites' frames and scripts:
``Content-Security-Policy`` (scripts, styles and connections from this server only; no
frames of us anywhere), ``X-Content-Type-Options: nosniff`` (a cloud-config is never run
as a script), ``Referrer-Policy: no-referrer`` (node URLs stay here), and the older
``X-Frame-Options`` for browsers without ``frame-ancestors``. Files granian serves itself
(``server.static_assets``) do not pass through here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, request

from .context import require_operator

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# img-src also allows data: URLs (a blank favicon); nothing else leaves 'self'.
POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
F = TypeVar("F", bound=Callable[..., Any])


def node_call(view: F) -> F:
    """Mark a view the node itself calls with its own token: not an operator's change."""
    view.node_call = True  # type: ignore[attr-defined]
    return view


def register(app: Flask) -> None:
    app.before_request(guard_writes)
    app.after_request(add_headers)


def guard_writes() -> None:
    """Refuse a change from a caller that may not make it (raises Forbidden)."""
    if request.method in SAFE_METHODS or request.url_rule is None:
        return  # reads, and routes that do not exist (404/405 say so)
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "node_call", False):
        return
    require_operator()


def add_headers(resp: Response) -> Response:
    for name, value in HEADERS.items():
        resp.headers.setdefault(name, value)
    return resp
