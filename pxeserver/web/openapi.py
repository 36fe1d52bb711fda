"""The OpenAPI 3.1 document of the whole HTTP API, served at ``/api/v1/openapi.json``.

Written by hand next to the code it describes, and held to it by a schemathesis run
against a live server in the test suite (tests/test_openapi.py): every response's status,
content type and body must match what is written here.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from .. import __version__
from ..config import Settings
from .boot import KNOWN_ARCHES
from .listing import SORT_FIELDS

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

STATES = ["discovered", "booting", "configured", "ready", "lost"]
KINDS = [
    "dhcp",
    "tftp",
    "ipxe",
    "cloud-config",
    "ignition",
    "ready",
    "heartbeat",
    "lost",
    "operator",
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str, media: str = "text/plain") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **more}


# Exactly what MAC.parse accepts (surrounding blanks aside), so that generated requests
# that match it must be accepted.
HEX = "[0-9A-Fa-f]"
MAC_PATTERN = (
    f"^({HEX}{{12}}|{HEX}{{4}}\\.{HEX}{{4}}\\.{HEX}{{4}}"
    f"|{HEX}{{1,2}}(:{HEX}{{1,2}}){{5}}|{HEX}{{1,2}}(-{HEX}{{1,2}}){{5}})$"
)
HOSTNAME_PATTERN = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
LABEL_KEY_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.\\-/]{0,62}$"
LABEL_VALUE = {
    "type": "string",
    "maxLength": 253,
    # (The server also refuses lone surrogates, which UTF-8 cannot carry anyway.)
    "pattern": '^[^\\x00-\\x1f\\x7f-\\x9f\\ufffe\\uffff",=\\\\]*$',
}


MAC_PARAM = {
    "name": "mac",
    "in": "path",
    "required": True,
    "description": "aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabbccddeeff or aabb.ccdd.eeff",
    "schema": {"type": "string", "pattern": MAC_PATTERN},
}
MAC_QUERY = {**MAC_PARAM, "in": "query"}
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before asking again",
        "schema": {"type": "string"},
    }
}

# Answers every API call can give: bad input, the store down, a query too long.
API_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "414": {"$ref": "#/components/responses/TooLong"},
    "503": {"$ref": "#/components/responses/StoreDown"},
}
# The same for what machines fetch: plain text, which iPXE shows on the console.
BOOT_ERRORS = {
    "400": _text("a parameter is malformed; the text says which and what is expected"),
    "404": _text("no group selects this machine and there is no default group"),
    "414": _text("the query string is too long"),
    "500": _text("the profile's template failed; the text and the server log say why"),
    "503": {**_text("the node store is unavailable; iPXE retries"), "headers": RETRY_AFTER},
}
WRITE_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "404": {"$ref": "#/components/responses/NotFound"},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "additionalProperties": False,
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    },
    "Node": {
        "type": "object",
        "additionalProperties": False,
        "required": ["mac", "hostname", "state", "labels", "boot_count", "profile_source"],
        "properties": {
            "mac": {"type": "string", "example": "52:54:00:12:34:56"},
            "hostname": {"type": "string"},
            "uuid": _nullable("string"),
            "arch": _nullable("string"),
            "platform": _nullable("string"),
            "ip": _nullable("string"),
            "profile": _nullable("string", description="the profile it boots now"),
            "profile_source": {"type": "string", "description": "operator, group NAME, …"},
            "assigned_profile": _nullable("string", description="set by an operator"),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "state": {"type": "string", "enum": STATES},
            "first_seen": _nullable("string", format="date-time"),
            "last_seen": _nullable("string", format="date-time"),
            "last_heartbeat": _nullable("string", format="date-time"),
            "boot_count": {"type": "integer", "minimum": 0},
            "installed": _nullable(
                "string",
                description="the install-to-disk profile on the node's disk (it phoned home "
                "ready under it): boots of that profile start from disk; null: none",
            ),
            "installed_at": _nullable("string", format="date-time"),
        },
    },
    "Event": {
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "at", "state", "detail", "count", "took"],
        "properties": {
            "kind": {"type": "string", "enum": KINDS},
            "at": {"type": "string", "format": "date-time"},
            "state": {"type": "string", "enum": STATES},
            "detail": {"type": "string"},
            "count": {"type": "integer", "minimum": 1},
            "took": _nullable("number", description="seconds since the previous boot step"),
        },
    },
    "NodeList": {
        "type": "object",
        "additionalProperties": False,
        "required": ["nodes", "count", "offset", "limit", "by_state"],
        "properties": {
            "nodes": {"type": "array", "items": _ref("Node"), "description": "this page"},
            "count": {
                "type": "integer",
                "minimum": 0,
                "description": "nodes that match the filters, on all pages together",
            },
            "offset": {"type": "integer", "minimum": 0},
            "limit": _nullable("integer", description="null: every matching node"),
            "by_state": {
                "type": "object",
                "description": "every node in the registry by state, whatever the filters",
                "additionalProperties": False,
                "required": STATES,
                "properties": {s: {"type": "integer", "minimum": 0} for s in STATES},
            },
        },
    },
    "NodePatch": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            # The enum of profile names is filled in from the settings when served.
            "profile": _nullable("string", description="a profile; null: back to the groups"),
            "labels": {
                "type": "object",
                "propertyNames": {"pattern": LABEL_KEY_PATTERN},
                "additionalProperties": {**LABEL_VALUE, "type": ["string", "null"]},
                "description": "merged into the node's labels; null removes a label",
            },
            "hostname": {"type": "string", "pattern": HOSTNAME_PATTERN},
            "reinstall": {
                "type": "boolean",
                "description": "true: forget what the node installed on its disk, so that its "
                "next boot network-boots (and installs) its profile again",
            },
        },
    },
    "PhoneHome": {
        "type": "object",
        "additionalProperties": False,
        "required": ["mac", "hostname", "state"],
        "properties": {
            "mac": {"type": "string"},
            "hostname": {"type": "string"},
            "state": {"type": "string", "enum": STATES},
        },
    },
    "Verdict": {
        "type": "object",
        "additionalProperties": False,
        "required": ["group", "profile", "selectors", "matched", "chosen", "why"],
        "properties": {
            "group": {"type": "string"},
            "profile": _nullable("string"),
            "selectors": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
            "matched": {"type": "boolean"},
            "chosen": {"type": "boolean"},
            "why": {"type": "string"},
        },
    },
    "Explain": {
        "type": "object",
        "additionalProperties": False,
        "required": ["mac", "known", "profile", "reason", "verdicts", "ipxe", "token_hidden"],
        "properties": {
            "mac": {"type": "string"},
            "known": {"type": "boolean", "description": "false: not registered yet"},
            "hostname": {"type": "string"},
            "state": _nullable("string", enum=[*STATES, None]),
            "arch": _nullable("string"),
            "platform": _nullable("string"),
            "profile": _nullable("string"),
            "group": _nullable("string"),
            "reason": {"type": "string"},
            "verdicts": {"type": "array", "items": _ref("Verdict")},
            "ipxe": _nullable("string"),
            "cloud_config": _nullable("string"),
            "ignition": _nullable("string"),
            "token_hidden": {"type": "boolean"},
            "boot_from_disk": _nullable(
                "boolean", description="true: the iPXE script is `exit`, boot from disk"
            ),
            "boot_why": _nullable("string", description="why network boot or local disk"),
        },
    },
    "Info": {
        "type": "object",
        "additionalProperties": False,
        "required": ["version", "writes_need_token", "profiles", "groups", "states"],
        "properties": {
            "version": {"type": "string"},
            "writes_need_token": {"type": "boolean"},
            "profiles": {"type": "array", "items": {"type": "string"}},
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "profile", "selectors"],
                    "properties": {
                        "name": {"type": "string"},
                        "profile": {"type": "string"},
                        "selectors": {
                            "type": "object",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
            },
            "states": {"type": "array", "items": {"type": "string", "enum": STATES}},
        },
    },
    "Health": {
        "type": "object",
        "additionalProperties": False,
        "required": ["status", "store"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "store": {"type": "string"},
        },
    },
}
# A node with its timeline: everything a Node has, plus events.
SCHEMAS["NodeDetail"] = {
    **SCHEMAS["Node"],
    "required": [*SCHEMAS["Node"]["required"], "events"],
    "properties": {
        **SCHEMAS["Node"]["properties"],
        "events": {"type": "array", "items": _ref("Event")},
    },
}

RESPONSES = {
    "BadRequest": _json(_ref("Error"), "bad input; the message says what was expected"),
    "NotFound": _json(_ref("Error"), "no such node"),
    "Unauthorized": {
        **_json(_ref("Error"), "the token is missing"),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "Forbidden": _json(_ref("Error"), "the token is wrong"),
    "TooLong": _json(_ref("Error"), "the query string is longer than 4096 bytes"),
    "StoreDown": {
        **_json(_ref("Error"), "the node store is unavailable; try again"),
        "headers": RETRY_AFTER,
    },
}


def _boot_paths() -> dict[str, Any]:
    fact = {"in": "query", "required": False, "schema": {"type": "string"}}
    return {
        "/boot.ipxe": {
            "get": {
                "tags": ["boot"],
                "summary": "The chain script iPXE starts with",
                "responses": {"200": _text("an iPXE script")},
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
                "responses": {"200": _text("an iPXE script"), **BOOT_ERRORS},
            }
        },
        "/cloud-config": {
            "get": {
                "tags": ["boot"],
                "summary": "The node's cloud-config; records it as configured",
                "parameters": [MAC_QUERY],
                "responses": {
                    "200": _text("a validated #cloud-config", "text/cloud-config"),
                    **BOOT_ERRORS,
                },
            }
        },
        "/ignition": {
            "get": {
                "tags": ["boot"],
                "summary": "The node's Ignition (spec 3) config; records it as configured",
                "parameters": [MAC_QUERY],
                "responses": {
                    "200": {
                        "description": "a validated Ignition config",
                        "content": {
                            "application/vnd.coreos.ignition+json": {"schema": {"type": "object"}}
                        },
                    },
                    **BOOT_ERRORS,
                    "404": _text("no group selects it, or its profile has no Ignition config"),
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
                    "404": _text("no such file"),
                    "414": _text("the query string is too long"),
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
                    "404": _text("no such file"),
                    "414": _text("the query string is too long"),
                    "416": {"description": "range not satisfiable", "content": {"*/*": {}}},
                },
            }
        },
    }


def _node_paths() -> dict[str, Any]:
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
        "security": [{"nodeToken": []}, {}],
        "parameters": [MAC_PARAM],
        "responses": {
            "200": _json(_ref("PhoneHome"), "recorded"),
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
                "responses": {"200": _json(_ref("NodeList"), "the nodes"), **API_ERRORS},
            }
        },
        "/api/v1/nodes/{mac}": {
            "parameters": [MAC_PARAM],
            "get": {
                "tags": ["nodes"],
                "summary": "One node with its boot timeline",
                "responses": {
                    "200": _json(_ref("NodeDetail"), "the node"),
                    "404": {"$ref": "#/components/responses/NotFound"},
                    **API_ERRORS,
                },
            },
            "patch": {
                "tags": ["nodes"],
                "summary": "Assign a profile, merge labels, rename",
                "security": [{"apiToken": []}, {}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NodePatch")}},
                },
                "responses": {
                    "200": _json(_ref("NodeDetail"), "the changed node"),
                    "409": _json(_ref("Error"), "the hostname belongs to another node"),
                    "413": _json(_ref("Error"), "the body is larger than 64 KiB"),
                    **API_ERRORS,
                    **WRITE_ERRORS,
                },
            },
            "delete": {
                "tags": ["nodes"],
                "summary": "Forget a node (it is registered anew when it boots)",
                "security": [{"apiToken": []}, {}],
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
                    "200": _json(_ref("Explain"), "the decision and the rendered files"),
                    "404": {"$ref": "#/components/responses/NotFound"},
                    "500": _json(_ref("Error"), "a template failed; the message says why"),
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
                "summary": "Profiles, groups, states, and whether writes need a token",
                "responses": {"200": _json(_ref("Info"), "what this server has")},
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "tags": ["server"],
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        "/healthz": {
            "get": {
                "tags": ["server"],
                "summary": "Health: 200, or 503 when the store is down",
                "responses": {
                    "200": _json(_ref("Health"), "healthy"),
                    "503": _json(_ref("Health"), "the store does not answer"),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["server"],
                "summary": "Prometheus metrics (pxeserver_…), summed over the server's processes",
                "responses": {"200": _text("Prometheus text exposition format")},
            }
        },
    }


def document(profiles: list[str]) -> dict[str, Any]:
    schemas = dict(SCHEMAS)
    patch = schemas["NodePatch"]
    schemas["NodePatch"] = {
        **patch,
        "properties": {
            **patch["properties"],
            "profile": {**patch["properties"]["profile"], "enum": [*profiles, None]},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pxeserver",
            "version": __version__,
            "description": "What PXE-booting machines fetch, and the node API operators and "
            "nodes use. Writes need `Authorization: Bearer <api_token>` when the server "
            "has one; ready and heartbeat need the node's own token.",
        },
        "paths": {**_boot_paths(), **_node_paths(), **_server_paths()},
        "components": {
            "schemas": schemas,
            "responses": RESPONSES,
            "securitySchemes": {
                "apiToken": {"type": "http", "scheme": "bearer"},
                "nodeToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    settings: Settings = current_app.extensions["pxeserver.settings"]
    return jsonify(document(sorted(settings.profiles)))
