"""The Flask application behind the RSGI entrance: a request as WSGI sees it, run in a
thread of the worker's pool, its answer handed back to granian.

granian serves one interface per server; ``serve`` uses RSGI so that the boot paths
answer without a thread hop (:mod:`pxeserver.web.entrance`), and every other path goes
to Flask through here, with what granian's own WSGI side would have given it: the same
environ keys (``REMOTE_ADDR`` without the port, the path as Latin-1 text of its bytes),
the body (at most one byte past Flask's limit is read, so that a huge body is refused
with 413 without being read), and Flask's status, headers and body as they are.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
NO_BODY = ("content-length", "transfer-encoding")


def address(client: str) -> tuple[str, str]:
    """granian's ``host:port`` (``[v6]:port``) as the host and the port."""
    host, _, port = client.rpartition(":")
    return host.strip("[]"), port


def environ_for(scope: Any, body: bytes) -> dict[str, Any]:
    """The WSGI environ of an RSGI request (PEP 3333)."""
    server, port = address(scope.server)
    remote, remote_port = address(scope.client)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": scope.path.encode("utf-8", "surrogateescape").decode("latin-1"),
        "QUERY_STRING": scope.query_string,
        "SERVER_NAME": server,
        "SERVER_PORT": port,
        "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
        "REMOTE_ADDR": remote,
        "REMOTE_PORT": remote_port,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in scope.headers.items():
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


async def read_body(scope: Any, proto: Any, limit: int) -> bytes:
    """The request body, but never more than ``limit`` + 1 bytes: Flask answers 413 past
    ``limit``, from the Content-Length alone when there is one."""
    declared = scope.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return b""
    if declared is None and "transfer-encoding" not in scope.headers:
        return b""
    body = bytearray()
    async for chunk in proto:
        body += chunk
        if len(body) > limit:
            break
    return bytes(body[: limit + 1])


def run(app: WsgiApp, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Call the WSGI app; its status, headers and whole body."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None  # PEP 3333's write(); Flask never calls it

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started
    return int(status.split(" ", 1)[0]), list(headers), body


async def forward(app: WsgiApp, scope: Any, proto: Any, pool: Executor, limit: int) -> None:
    """Answer an RSGI request with the WSGI app, run in ``pool``."""
    body = await read_body(scope, proto, limit)
    environ = environ_for(scope, body)
    loop = asyncio.get_running_loop()
    status, headers, content = await loop.run_in_executor(pool, run, app, environ)
    if scope.method == "HEAD" and status not in (204, 304):
        # what a GET would carry, without the body (granian sends none for HEAD)
        proto.response_empty(status, [(k, v) for k, v in headers if k.lower() != NO_BODY[1]])
        return
    headers = [(k, v) for k, v in headers if k.lower() not in NO_BODY]
    if status in (204, 304):
        proto.response_empty(status, headers)
    else:
        proto.response_bytes(status, headers, content)
