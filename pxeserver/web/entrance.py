"""The HTTP side as ``serve`` runs it: an RSGI application for granian's workers.

The boot paths, which every booting machine asks for and which a boot storm asks for a
thousand times at once, are answered here, on the worker's event loop, without a thread
hop and without Flask: ``/ipxe`` and ``/cloud-config`` of a machine the worker's view
knows come from memory (:meth:`pxeserver.boot.BootService.ipxe_script_from_memory`);
one that needs the store is answered from a thread of the worker's pool. Kernels,
initrds and boot loaders (``/assets/``, ``/boot/``) go out from granian's file response,
the bytes never through Python, with the headers Werkzeug decides
(:func:`pxeserver.web.files.file_answer`). Everything else, and every method but GET and
HEAD on these paths, goes to the Flask application (:mod:`pxeserver.web.wsgi`).

The rules of these paths are those of the Flask views (the same functions decide: the
query in :mod:`pxeserver.web.boot`, errors in :mod:`pxeserver.web.errors`, files in
:mod:`pxeserver.web.files`), and so are the answers: the same statuses, bodies and
``Content-Type``, 414 for a query past 4 KiB, 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

from flask import Flask
from werkzeug.sansio.utils import get_host

from ..config import Settings
from ..errors import PxeError
from .boot import CLOUD_CONFIG_TYPE, IPXE_TYPE, mac_of, machine_of, source_ip
from .context import WebBoot, base_url_for
from .errors import MAX_BODY, MAX_QUERY, answer_for
from .files import file_answer, locate, remember_client
from .guard import InFlight
from .security import HEADERS
from .wsgi import address, forward, run

log = logging.getLogger(__name__)

THREADS = 8  # a worker's threads for Flask and for boot requests that wait for the store
CHARSET = "charset=utf-8"
SECURITY = list(HEADERS.items())  # on every answer, as the Flask app adds them
TEXT = f"text/plain; {CHARSET}"


class Entrance:
    """An RSGI application (``__rsgi__``, ``__rsgi_init__``, ``__rsgi_del__``)."""

    def __init__(self, app: Flask, boot: WebBoot, settings: Settings) -> None:
        self.app = app
        self.boot = boot
        self.settings = settings
        self.pool = ThreadPoolExecutor(THREADS, thread_name_prefix="http")
        self.routes = {"/ipxe": self._ipxe, "/cloud-config": self._cloud_config,
                       "/boot.ipxe": self._chain}  # fmt: skip
        self.file_prefixes = ("/assets/", "/boot/")

    def __rsgi_init__(self, loop: Any) -> None:
        pass

    def __rsgi_del__(self, loop: Any) -> None:
        self.pool.shutdown(wait=False)

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return  # no websockets here: granian closes the connection
        if scope.method in ("GET", "HEAD"):
            route = self.routes.get(scope.path)
            if route is None:
                prefix = next((p for p in self.file_prefixes if scope.path.startswith(p)), None)
                if prefix is not None:
                    route = functools.partial(self._file, prefix)
            if route is not None:
                return await self._answer(route, scope, proto)
        await self._forward(scope, proto)

    async def _forward(self, scope: Any, proto: Any) -> None:
        """To Flask, counted against the client's share of requests in flight from the
        moment it arrives (its body is read here, on the event loop, before a thread runs
        Flask): the cap the WSGI server had, see :mod:`pxeserver.web.guard`."""
        guard = self.app.wsgi_app
        if not isinstance(guard, InFlight):
            await forward(guard, scope, proto, self.pool, MAX_BODY)
            return
        client = address(scope.client)[0]
        if not guard.hold(client):
            status, headers, body = run(lambda _, reply: guard.refuse(client, reply), {})
            proto.response_bytes(status, [*headers, *SECURITY], body)
            return
        try:
            await forward(guard.app, scope, proto, self.pool, MAX_BODY)
        finally:
            guard.release(client)

    async def _answer(self, route: Any, scope: Any, proto: Any) -> None:
        """Run ``route``; an error is answered as the Flask application answers it."""
        try:
            if len(scope.query_string.encode()) > MAX_QUERY:
                self._text(scope, proto, 414, f"the query string is longer than {MAX_QUERY} "
                           "bytes")  # fmt: skip
                return
            await route(scope, proto)
        except PxeError as exc:
            full = f"{scope.path}?{scope.query_string}"
            answer = answer_for(exc, scope.method, scope.path, full)
            self._text(scope, proto, answer.status, answer.message, list(answer.headers))
        except Exception:
            log.exception("Exception on %s [%s]", scope.path, scope.method)
            self._text(scope, proto, 500, "the server failed on this request; see its log")

    async def _ipxe(self, scope: Any, proto: Any) -> None:
        remote = address(scope.client)[0]
        machine = machine_of(_args(scope), remote)
        remember_client(remote, machine.mac)  # for a 404 on its kernel next
        base, client = self._base(scope, remote), source_ip(machine.mac, remote)
        script = self.boot.ipxe_script_from_memory(machine, base, client)
        if script is None:
            script = await self._in_thread(self.boot.ipxe_script, machine, base, client)
        self._text(scope, proto, 200, script, content_type=f"{IPXE_TYPE}; {CHARSET}")

    async def _cloud_config(self, scope: Any, proto: Any) -> None:
        args = _args(scope)
        mac = mac_of(args)
        remote = address(scope.client)[0]
        ip, base = source_ip(mac, remote), self._base(scope, remote)
        # Once per boot, for the secret= of the URL its script gave (pxeserver.fetchsecret).
        secret = args.get("secret")
        text = self.boot.cloud_config_from_memory(mac, base, ip, secret)
        if text is None:
            text = await self._in_thread(self.boot.cloud_config, mac, base, ip, secret)
        self._text(scope, proto, 200, text, content_type=f"{CLOUD_CONFIG_TYPE}; {CHARSET}")

    async def _chain(self, scope: Any, proto: Any) -> None:
        base = self._base(scope, address(scope.client)[0])
        self._text(scope, proto, 200, self.boot.chain_script(base),
                   content_type=f"{IPXE_TYPE}; {CHARSET}")  # fmt: skip

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _base(self, scope: Any, remote: str) -> str:
        """:func:`pxeserver.web.context.base_url_for` this request from ``remote`` (the
        Host read by Werkzeug's rules, as Flask's ``request.host``)."""
        host = get_host(scope.scheme, scope.headers.get("host"), _server(scope))
        return base_url_for(self.settings.server, host, remote)

    @staticmethod
    def _text(scope: Any, proto: Any, status: int, text: str,
              headers: list[tuple[str, str]] | None = None,
              content_type: str = TEXT) -> None:  # fmt: skip
        body = (text if status == 200 else text + "\n").encode()
        fields = [("content-type", content_type), *(headers or []), *SECURITY]
        if scope.method == "HEAD":
            proto.response_empty(status, [*fields, ("content-length", str(len(body)))])
        else:
            proto.response_bytes(status, fields, body)

    # -- files -------------------------------------------------------------------------------

    async def _file(self, prefix: str, scope: Any, proto: Any) -> None:
        remote = address(scope.client)[0]
        path = locate(self.settings, prefix, scope.path[len(prefix) :], remote)
        answer = file_answer(path, _file_environ(scope))
        answer.headers.extend(SECURITY)
        if answer.end is None:
            if scope.method == "HEAD" or not answer.body:
                proto.response_empty(answer.status, answer.headers)
            else:
                proto.response_bytes(answer.status, answer.headers, answer.body)
        elif answer.status == 206:
            proto.response_file_range(206, answer.headers, str(path), answer.start, answer.end)
        else:
            proto.response_file(answer.status, answer.headers, str(path))


def _args(scope: Any) -> dict[str, str]:
    """The query's fields, the first of each name (as Flask's ``request.args.get``): those
    of ``parse_qsl(query, keep_blank_values=True)``, read here without its general
    machinery. A field with no ``%`` and no ``+`` (all of iPXE's) needs no decoding."""
    args: dict[str, str] = {}
    for field in scope.query_string.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in field or "+" in field:
            name, value = unquote(name.replace("+", " ")), unquote(value.replace("+", " "))
        if name not in args:
            args[name] = value
    return args


def _server(scope: Any) -> tuple[str, int | None]:
    host, port = address(scope.server)
    return host, int(port) if port.isdigit() else None


def _file_environ(scope: Any) -> dict[str, Any]:
    """What Werkzeug's file answer reads of the request: the method and its headers."""
    environ: dict[str, Any] = {"REQUEST_METHOD": scope.method}
    for name in ("range", "if-range", "if-none-match", "if-modified-since", "if-match"):
        value = scope.headers.get(name)
        if value is not None:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ
