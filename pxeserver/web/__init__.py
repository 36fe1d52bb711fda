"""The HTTP side: a Flask application built by :func:`create_app`.

Each URL area is a blueprint: ``boot`` (what machines fetch: chain script, iPXE script,
cloud-config, Ignition), ``files`` (kernels and initrds under ``/assets/``, boot loaders
under ``/boot/``), ``api`` (the node API for operators and the node's own phone-home
calls), ``explain`` (why a node boots what it boots; what this server has),
``monitoring`` (``/metrics``, ``/healthz``), ``openapi`` (the API's document) and ``page``
(the node page). What they share is in :mod:`.context` (the boot policy, the settings,
the base URL, who may change nodes), :mod:`.security` (the guard on every change, the
headers on every answer), :mod:`.guard` (how many requests one address may have in
flight) and :mod:`.errors` (how errors become answers). The
application never touches the registry or the store: it asks the boot policy it is given.
"""

from __future__ import annotations

from flask import Flask

from ..config import Settings
from . import api, boot, errors, explain, files, monitoring, openapi, page, security
from .context import WebBoot
from .guard import InFlight


def create_app(settings: Settings, service: WebBoot) -> Flask:
    app = Flask(__name__)
    app.extensions["pxeserver"] = service
    app.extensions["pxeserver.settings"] = settings
    errors.register(app)
    security.register(app)
    for area in (boot, files, api, explain, monitoring, openapi, page):
        app.register_blueprint(area.bp)
    app.wsgi_app = InFlight(app.wsgi_app, settings.limits.http_requests_per_client)  # type: ignore[method-assign]
    return app
