"""Errors at the HTTP boundary: each of pxeserver's errors becomes one status and one
sentence, JSON under ``/api/``, plain text for what machines fetch (iPXE shows it).

The store down is 503 with ``Retry-After`` (iPXE retries), bad input 400, a token missing
401 or wrong 403, unknown things 404, a lost race 409, a template that failed 500.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Answer:
    """An error as an HTTP answer, whatever serves it (Flask here, the RSGI entrance for
    the boot paths)."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


def answer_for(exc: PxeError, method: str, path: str, full_path: str) -> Answer:
    """The status, sentence and headers for ``exc``; logs what an operator must see."""
    if isinstance(exc, StoreUnavailable):
        metrics.store_errors.labels(where="http").inc()
        log.error("store unavailable, answering 503 to %s %s: %s", method, path, exc)
        return Answer(503, f"the node store is unavailable ({exc}); try again shortly",
                      (("Retry-After", str(RETRY_AFTER_S)),))  # fmt: skip
    if isinstance(exc, InvalidInput):
        return Answer(400, str(exc))
    if isinstance(exc, Forbidden):
        if exc.missing:
            return Answer(401, str(exc), (("WWW-Authenticate", 'Bearer realm="pxeserver"'),))
        return Answer(403, str(exc))
    if isinstance(exc, NotFound):
        return Answer(404, str(exc))
    if isinstance(exc, Conflict):
        return Answer(409, str(exc))
    if isinstance(exc, RenderError):
        log.error("rendering failed for %s %s: %s", method, full_path, exc)
        return Answer(500, f"pxeserver could not render this: {exc}")
    log.error("unexpected error for %s %s: %s", method, path, exc)
    return Answer(500, str(exc))


def pxe_error(exc: PxeError) -> Response:
    answer = answer_for(exc, request.method, request.path, request.full_path)
    resp = error(answer.status, answer.message)
    for name, value in answer.headers:
        resp.headers[name] = value
    return resp


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
