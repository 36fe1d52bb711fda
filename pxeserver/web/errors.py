"""Errors at the HTTP boundary: each of pxeserver's errors becomes one status and one
sentence, JSON under ``/api/``, plain text for what machines fetch (iPXE shows it).

The store down is 503 with ``Retry-After`` (iPXE retries), bad input 400, a token missing
401 or wrong 403, unknown things 404, a lost race 409, a template that failed 500.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request

from .. import metrics
from ..errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PxeError,
    RenderError,
    StoreUnavailable,
)
from ..logs import redact

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_QUERY = 4096
RETRY_AFTER_S = 5


def register(app: Flask) -> None:
    """Limit request sizes and answer every error as described above."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.before_request(limit_query)
    app.register_error_handler(PxeError, pxe_error)
    app.register_error_handler(413, too_large)
    app.register_error_handler(404, not_found)
    app.register_error_handler(405, not_allowed)


def limit_query() -> Response | None:
    if len(request.query_string) > MAX_QUERY:
        return error(414, f"the query string is longer than {MAX_QUERY} bytes")
    return None


def pxe_error(exc: PxeError) -> Response:
    if isinstance(exc, StoreUnavailable):
        metrics.store_errors.labels(where="http").inc()
        log.error("store unavailable, answering 503 to %s %s: %s", request.method, request.path,
                  exc)  # fmt: skip
        resp = error(503, f"the node store is unavailable ({exc}); try again shortly")
        resp.headers["Retry-After"] = str(RETRY_AFTER_S)
        return resp
    if isinstance(exc, InvalidInput):
        return error(400, str(exc))
    if isinstance(exc, Forbidden):
        resp = error(401 if exc.missing else 403, str(exc))
        if exc.missing:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="pxeserver"'
        return resp
    if isinstance(exc, NotFound):
        return error(404, str(exc))
    if isinstance(exc, Conflict):
        return error(409, str(exc))
    if isinstance(exc, RenderError):
        log.error("rendering failed for %s %s: %s", request.method, request.full_path, exc)
        return error(500, f"pxeserver could not render this: {exc}")
    log.error("unexpected error for %s %s: %s", request.method, request.path, exc)
    return error(500, str(exc))


def too_large(_exc: Exception) -> Response:
    return error(413, f"the request body is larger than {MAX_BODY} bytes")


def not_found(_exc: Exception) -> Response:
    return error(404, f"no such page: {request.path}")


def not_allowed(exc: Exception) -> Response:
    resp = error(405, f"{request.method} is not allowed on {request.path}")
    allowed = getattr(exc, "valid_methods", None)
    if allowed:  # RFC 9110: a 405 lists the methods that are allowed
        resp.headers["Allow"] = ", ".join(sorted(allowed))
    return resp


def error(status: int, message: str) -> Response:
    """JSON for the API, plain text for everything machines fetch. A URL's user and
    password (an etcd endpoint's, in a 503) never show."""
    message = redact(message)
    if request.path.startswith("/api/"):
        resp = jsonify(error=message, status=status)
    else:
        resp = Response(message + "\n", mimetype="text/plain")
    resp.status_code = status
    return resp
