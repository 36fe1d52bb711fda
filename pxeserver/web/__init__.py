"""The HTTP side: a Flask application built by :func:`create_app`.

Each URL area is a blueprint: ``boot`` (what machines fetch: chain script, iPXE script,
cloud-config), ``assets`` (kernels and initrds), ``api`` (the node API for operators and
the node's own phone-home calls). The application never touches the store: it asks the
:class:`~pxeserver.boot.BootService` it is given.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request

from .. import metrics
from ..boot import BootService
from ..config import Settings
from ..errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PxeError,
    RenderError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_QUERY = 4096
RETRY_AFTER_S = 5


def create_app(settings: Settings, service: BootService) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["pxeserver"] = service
    app.extensions["pxeserver.settings"] = settings

    from . import api, assets, boot, loaders

    app.register_blueprint(boot.bp)
    app.register_blueprint(assets.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(loaders.bp)
    app.add_url_rule("/healthz", view_func=api.healthz)
    register_operator_views(app)

    @app.before_request
    def limit_query() -> Response | None:
        if len(request.query_string) > MAX_QUERY:
            return _error(414, f"the query string is longer than {MAX_QUERY} bytes")
        return None

    @app.errorhandler(PxeError)
    def pxe_error(exc: PxeError) -> Response:
        if isinstance(exc, StoreUnavailable):
            metrics.store_errors.labels(where="http").inc()
            log.error(
                "store unavailable, answering 503 to %s %s: %s", request.method, request.path, exc
            )
            resp = _error(503, f"the node store is unavailable ({exc}); try again shortly")
            resp.headers["Retry-After"] = str(RETRY_AFTER_S)
            return resp
        if isinstance(exc, InvalidInput):
            return _error(400, str(exc))
        if isinstance(exc, Forbidden):
            resp = _error(401 if exc.missing else 403, str(exc))
            if exc.missing:
                resp.headers["WWW-Authenticate"] = 'Bearer realm="pxeserver"'
            return resp
        if isinstance(exc, NotFound):
            return _error(404, str(exc))
        if isinstance(exc, Conflict):
            return _error(409, str(exc))
        if isinstance(exc, RenderError):
            log.error("rendering failed for %s %s: %s", request.method, request.full_path, exc)
            return _error(500, f"pxeserver could not render this: {exc}")
        log.error("unexpected error for %s %s: %s", request.method, request.path, exc)
        return _error(500, str(exc))

    @app.errorhandler(413)
    def too_large(_exc: Exception) -> Response:
        return _error(413, f"the request body is larger than {MAX_BODY} bytes")

    @app.errorhandler(404)
    def not_found(_exc: Exception) -> Response:
        return _error(404, f"no such page: {request.path}")

    @app.errorhandler(405)
    def not_allowed(exc: Exception) -> Response:
        resp = _error(405, f"{request.method} is not allowed on {request.path}")
        allowed = getattr(exc, "valid_methods", None)
        if allowed:  # RFC 9110: a 405 lists the methods that are allowed
            resp.headers["Allow"] = ", ".join(sorted(allowed))
        return resp

    return app


def register_operator_views(app: Flask) -> None:
    """What operators look at: the node page, explain, metrics and the OpenAPI document."""
    from . import explain, metrics_view, openapi, page

    app.register_blueprint(explain.bp)
    app.register_blueprint(metrics_view.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(page.bp)


def _error(status: int, message: str) -> Response:
    """JSON for the API, plain text for everything machines fetch."""
    if request.path.startswith("/api/"):
        resp = jsonify(error=message, status=status)
    else:
        resp = Response(message + "\n", mimetype="text/plain")
    resp.status_code = status
    return resp


def service() -> BootService:
    from flask import current_app

    return current_app.extensions["pxeserver"]


def base_url() -> str:
    """How the asking machine reaches us: the configured base URL, else the Host it used."""
    from flask import current_app

    settings: Settings = current_app.extensions["pxeserver.settings"]
    return settings.server.base_url or request.host_url.rstrip("/")
