"""The OpenAPI 3.1 document of the whole HTTP API, served at ``/api/v1/openapi.json``.

Written by hand next to the code it describes, and held to it by a schemathesis run
against a live server in the test suite (tests/web/test_openapi.py): every response's
status, content type and body must match what is written here. The paths are here; the
schemas of the bodies are in :mod:`.schemas`.

Each operation's ``security`` says what this server enforces (tests/web/test_auth.py
calls every operation to hold it to that): nothing for reads and what machines fetch;
the node's own token for ``ready`` and ``heartbeat``; for changes, the API token when the
server has one, else none from this machine only (``x-pxeserver-from: loopback``) or
from anyone (``server.allow_unauthenticated_writes``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from .. import __version__
from ..model import KNOWN_ARCHES
from .context import settings, write_policy
from .listing import SORT_FIELDS
from .schemas import (
    API_ERRORS,
    BOOT_ERRORS,
    MAC_PARAM,
    MAC_QUERY,
    RESPONSES,
    SCHEMAS,
    STATES,
    WRITE_ERRORS,
    json_body,
    node_patch,
    ref,
    text_body,
)

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")


# A config is handed out once per boot, to the machine that fetched the boot script, for
# the one-time secret of the URL in that script (pxeserver/fetchsecret.py).
ONCE_PER_BOOT: dict[str, Any] = {
    "security": [{"fetchSecret": []}],
    "description": "Only for `secret=` of the URL the boot's iPXE script names, once, within "
    "server.config_fetch_window, from the network of the address that fetched the script "
    "(server.config_fetch_from); otherwise 403. To read a node's config without "
    "booting it: GET /api/v1/nodes/{mac}/explain or `pxeserver render MAC`.",
}

REFUSED = {
    "403": text_body(
        "refused: no secret, a wrong or expired one, another address, or a second fetch "
        "(one line saying which, and what to do)"
    )
}


def _boot_paths() -> dict[str, Any]:
    fact = {"in": "query", "required": False, "schema": {"type": "string"}}
    return {
        "/boot.ipxe": {
            "get": {
                "tags": ["boot"],
                "summary": "The chain script iPXE starts with",
                "responses": {"200": text_body("an iPXE script")},
            }
        },
        "/ipxe": {
            "get": {
                "tags": ["boot"],
                "summary": "The machine's own iPXE script; records it as booting",
                "description": "Unknown or malformed arch, platform, uuid and ip are ignored "
                "(the machine must boot), a malformed MAC is a 400.",
                "parameters": [
                    MAC_QUERY,
                    *({**fact, "name": n} for n in ("uuid", "arch", "platform", "ip")),
                ],
                "responses": {"200": text_body("an iPXE script"), **BOOT_ERRORS},
            }
        },
        "/cloud-config": {
            "get": {
                "tags": ["boot"],
                "summary": "The node's cloud-config; records it as configured",
                **ONCE_PER_BOOT,
                "parameters": [MAC_QUERY],
                "responses": {
                    "200": text_body("a validated #cloud-config", "text/cloud-config"),
                    **BOOT_ERRORS,
                    **REFUSED,
                },
            }
        },
        "/ignition": {
            "get": {
                "tags": ["boot"],
                "summary": "The node's Ignition (spec 3) config; records it as configured",
                **ONCE_PER_BOOT,
                "parameters": [MAC_QUERY],
                "responses": {
                    "200": {
                        "description": "a validated Ignition config",
                        "content": {
                            "application/vnd.coreos.ignition+json": {"schema": {"type": "object"}}
                        },
                    },
                    **BOOT_ERRORS,
                    "404": text_body("no group selects it, or its profile has no Ignition config"),
                    **REFUSED,
                },
            }
        },
        "/assets/{path}": {
            "get": {
                "tags": ["boot"],
                "summary": "Kernels, initrds and other files from the assets folder",
                "description": "Range requests, ETag and Last-Modified are supported.",
                "parameters": [
                    {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "the file", "content": {"*/*": {}}},
                    "206": {"description": "part of the file", "content": {"*/*": {}}},
                    "304": {"description": "not modified"},
                    "404": text_body("no such file"),
                    "414": text_body("the query string is too long"),
                    "416": {"description": "range not satisfiable", "content": {"*/*": {}}},
                },
            }
        },
        "/boot/{path}": {
            "get": {
                "tags": ["boot"],
                "summary": "Boot loaders from the TFTP root over HTTP (UEFI HTTP boot: ipxe.efi)",
                "description": "The file ProxyDHCP names for UEFI HTTP boot (arch 16). "
                "Range requests, ETag and Last-Modified are supported.",
                "parameters": [
                    {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "the file", "content": {"*/*": {}}},
                    "206": {"description": "part of the file", "content": {"*/*": {}}},
                    "304": {"description": "not modified"},
                    "404": text_body("no such file"),
                    "414": text_body("the query string is too long"),
                    "416": {"description": "range not satisfiable", "content": {"*/*": {}}},
                },
            }
        },
    }


WRITE_RULES = {
    "token": "Needs `Authorization: Bearer <api_token>`.",
    "loopback": "This server has no API token: accepted without one from its own machine "
    "(loopback) only, refused with 403 from anywhere else.",
    "anyone": "This server has no API token and `server.allow_unauthenticated_writes` is "
    "set: accepted from anyone.",
}


def write_security(writes: str) -> dict[str, Any]:
    """The security of an operator's change under the server's write rule."""
    if writes == "token":
        return {"security": [{"apiToken": []}]}
    found: dict[str, Any] = {"security": [{}], "x-pxeserver-writes": writes}
    if writes == "loopback":
        found["x-pxeserver-from"] = "loopback"
    return found


def _node_paths(writes: str) -> dict[str, Any]:
    guarded = {**write_security(writes), "description": WRITE_RULES[writes]}
    phone_home = {
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"token": {"type": "string"}},
                    }
                },
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {"token": {"type": "string"}},
                    }
                },
            },
        },
        "security": [{"nodeToken": []}],
        "description": "Needs the node's own token (its cloud-config carries it), as "
        "`Authorization: Bearer <token>` or a `token` field in the body.",
        "parameters": [MAC_PARAM],
        "responses": {
            "200": json_body(ref("PhoneHome"), "recorded"),
            **API_ERRORS,
            **WRITE_ERRORS,
        },
    }
    return {
        "/api/v1/nodes": {
            "get": {
                "tags": ["nodes"],
                "summary": "List nodes: filtered, sorted, a page at a time",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string", "enum": STATES},
                    },
                    {"name": "profile", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "label",
                        "in": "query",
                        "description": "key=value; repeat for several",
                        "schema": {
                            "type": "array",
                            "items": {"type": "string", "pattern": "^[^=]+="},
                        },
                        "style": "form",
                        "explode": True,
                    },
                    {
                        "name": "q",
                        "in": "query",
                        "description": "text in the MAC, hostname or IP (any case)",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "sort",
                        "in": "query",
                        "description": "the field to order by; nodes without it come last",
                        "schema": {"type": "string", "enum": list(SORT_FIELDS), "default": "mac"},
                    },
                    {
                        "name": "order",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["asc", "desc"], "default": "asc"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "at most this many nodes (a page); all without it",
                        "schema": {"type": "integer", "minimum": 1},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "description": "skip this many nodes of the order first",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                ],
                "responses": {"200": json_body(ref("NodeList"), "the nodes"), **API_ERRORS},
            }
        },
        "/api/v1/nodes/{mac}": {
            "parameters": [MAC_PARAM],
            "get": {
                "tags": ["nodes"],
                "summary": "One node with its boot timeline",
                "responses": {
                    "200": json_body(ref("NodeDetail"), "the node"),
                    "404": {"$ref": "#/components/responses/NotFound"},
                    **API_ERRORS,
                },
            },
            "patch": {
                "tags": ["nodes"],
                "summary": "Assign a profile, merge labels, rename",
                **guarded,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("NodePatch")}},
                },
                "responses": {
                    "200": json_body(ref("NodeDetail"), "the changed node"),
                    "409": json_body(ref("Error"), "the hostname belongs to another node"),
                    "413": json_body(ref("Error"), "the body is larger than 64 KiB"),
                    **API_ERRORS,
                    **WRITE_ERRORS,
                },
            },
            "delete": {
                "tags": ["nodes"],
                "summary": "Forget a node (it is registered anew when it boots)",
                **guarded,
                "responses": {"204": {"description": "forgotten"}, **API_ERRORS, **WRITE_ERRORS},
            },
        },
        "/api/v1/nodes/{mac}/ready": {
            "post": {
                "tags": ["nodes"],
                "summary": "The node phones home: it is ready",
                **phone_home,
            }
        },
        "/api/v1/nodes/{mac}/heartbeat": {
            "post": {"tags": ["nodes"], "summary": "The node is still alive", **phone_home}
        },
        "/api/v1/nodes/{mac}/explain": {
            "get": {
                "tags": ["nodes"],
                "summary": "Which group matched and why, and what the machine would be served",
                "description": "Like `pxeserver render` for a node in the registry: records "
                "nothing. The node's token is hidden unless the API token is given.",
                "parameters": [
                    MAC_PARAM,
                    {
                        "name": "platform",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["pcbios", "efi"]},
                    },
                    {
                        "name": "arch",
                        "in": "query",
                        "schema": {"type": "string", "enum": sorted(KNOWN_ARCHES)},
                    },
                ],
                "responses": {
                    "200": json_body(ref("Explain"), "the decision and the rendered files"),
                    "404": {"$ref": "#/components/responses/NotFound"},
                    "500": json_body(ref("Error"), "a template failed; the message says why"),
                    **API_ERRORS,
                },
            }
        },
    }


def _server_paths() -> dict[str, Any]:
    return {
        "/api/v1/info": {
            "get": {
                "tags": ["server"],
                "summary": "Profiles, groups, states, and who may change nodes",
                "responses": {"200": json_body(ref("Info"), "what this server has")},
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "tags": ["server"],
                "summary": "This document",
                "responses": {"200": json_body({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        "/healthz": {
            "get": {
                "tags": ["server"],
                "summary": "Health: 200, or 503 when the store is down",
                "responses": {
                    "200": json_body(ref("Health"), "healthy"),
                    "503": json_body(ref("Health"), "the store does not answer"),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["server"],
                "summary": "Prometheus metrics (pxeserver_…), summed over the server's processes",
                "responses": {"200": text_body("Prometheus text exposition format")},
            }
        },
    }


def document(profiles: list[str], writes: str = "token") -> dict[str, Any]:
    """The document for a server with these profiles and this write rule
    (:func:`.context.write_policy`)."""
    schemas = {**SCHEMAS, "NodePatch": node_patch(profiles)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pxeserver",
            "version": __version__,
            "description": "What PXE-booting machines fetch, and the node API operators and "
            f"nodes use. Changes: {WRITE_RULES[writes]} Ready and heartbeat need the node's "
            "own token.",
        },
        "paths": {**_boot_paths(), **_node_paths(writes), **_server_paths()},
        "components": {
            "schemas": schemas,
            "responses": RESPONSES,
            "securitySchemes": {
                "apiToken": {"type": "http", "scheme": "bearer"},
                "nodeToken": {"type": "http", "scheme": "bearer"},
                "fetchSecret": {"type": "apiKey", "in": "query", "name": "secret"},
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(document(sorted(settings().profiles), write_policy()))
