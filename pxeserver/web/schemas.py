"""The JSON Schemas of the API's bodies and the answers every call can give: the
components of the OpenAPI document (:mod:`.openapi`). Enums and patterns come from
:mod:`pxeserver.model`, which checks with the same ones; the body of a PATCH is validated
against the schema the document shows (:mod:`.patch`)."""

from __future__ import annotations

from typing import Any

from ..model import (
    HOSTNAME_PATTERN,
    LABEL_NAME_PATTERN,
    LABEL_VALUE_MAX,
    LABEL_VALUE_PATTERN,
    MAC_FORMS,
    MAC_PATTERN,
    EventKind,
    State,
)

STATES = [s.value for s in State]
KINDS = [k.value for k in EventKind]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def text_body(description: str, media: str = "text/plain") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


def nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **more}


LABEL_VALUE = {"type": "string", "maxLength": LABEL_VALUE_MAX, "pattern": LABEL_VALUE_PATTERN}


MAC_PARAM = {
    "name": "mac",
    "in": "path",
    "required": True,
    "description": MAC_FORMS,
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
    "400": text_body("a parameter is malformed; the text says which and what is expected"),
    "404": text_body("no group selects this machine and there is no default group"),
    "414": text_body("the query string is too long"),
    "500": text_body("the profile's template failed; the text and the server log say why"),
    "503": {**text_body("the node store is unavailable; iPXE retries"), "headers": RETRY_AFTER},
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
            "uuid": nullable("string"),
            "arch": nullable("string"),
            "platform": nullable("string"),
            "ip": nullable("string"),
            "profile": nullable("string", description="the profile it boots now"),
            "profile_source": {"type": "string", "description": "operator, group NAME, …"},
            "assigned_profile": nullable("string", description="set by an operator"),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "state": {"type": "string", "enum": STATES},
            "first_seen": nullable("string", format="date-time"),
            "last_seen": nullable("string", format="date-time"),
            "last_heartbeat": nullable("string", format="date-time"),
            "boot_count": {"type": "integer", "minimum": 0},
            "installed": nullable(
                "string",
                description="the install-to-disk profile on the node's disk (it phoned home "
                "ready under it): boots of that profile start from disk; null: none",
            ),
            "installed_at": nullable("string", format="date-time"),
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
            "took": nullable("number", description="seconds since the previous boot step"),
        },
    },
    "NodeList": {
        "type": "object",
        "additionalProperties": False,
        "required": ["nodes", "count", "offset", "limit", "by_state"],
        "properties": {
            "nodes": {"type": "array", "items": ref("Node"), "description": "this page"},
            "count": {
                "type": "integer",
                "minimum": 0,
                "description": "nodes that match the filters, on all pages together",
            },
            "offset": {"type": "integer", "minimum": 0},
            "limit": nullable("integer", description="null: every matching node"),
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
            # The enum of profile names is filled in from the settings (node_patch()).
            "profile": nullable("string", description="a profile; null: back to the groups"),
            "labels": {
                "type": "object",
                "propertyNames": {"pattern": LABEL_NAME_PATTERN},
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
            "profile": nullable("string"),
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
            "state": nullable("string", enum=[*STATES, None]),
            "arch": nullable("string"),
            "platform": nullable("string"),
            "profile": nullable("string"),
            "group": nullable("string"),
            "reason": {"type": "string"},
            "verdicts": {"type": "array", "items": ref("Verdict")},
            "ipxe": nullable("string"),
            "cloud_config": nullable("string"),
            "ignition": nullable("string"),
            "token_hidden": {"type": "boolean"},
            "boot_from_disk": nullable(
                "boolean", description="true: the iPXE script is `exit`, boot from disk"
            ),
            "boot_why": nullable("string", description="why network boot or local disk"),
        },
    },
    "Info": {
        "type": "object",
        "additionalProperties": False,
        "required": ["version", "writes_need_token", "writes", "profiles", "groups", "states"],
        "properties": {
            "version": {"type": "string"},
            "writes_need_token": {
                "type": "boolean",
                "description": "whether this request's client must give the API token to "
                "change nodes",
            },
            "writes": {
                "type": "string",
                "enum": ["token", "loopback", "anyone"],
                "description": "who may change nodes: whoever gives the API token; with no "
                "token set, this machine only (loopback), or anyone "
                "(server.allow_unauthenticated_writes)",
            },
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


def node_patch(profiles: list[str]) -> dict[str, Any]:
    """The body of a PATCH, with this server's profile names: what the document shows and
    what a PATCH is validated against."""
    patch = SCHEMAS["NodePatch"]
    profile = {**patch["properties"]["profile"], "enum": [*profiles, None]}
    return {**patch, "properties": {**patch["properties"], "profile": profile}}


# A node with its timeline: everything a Node has, plus events.
SCHEMAS["NodeDetail"] = {
    **SCHEMAS["Node"],
    "required": [*SCHEMAS["Node"]["required"], "events"],
    "properties": {
        **SCHEMAS["Node"]["properties"],
        "events": {"type": "array", "items": ref("Event")},
    },
}

RESPONSES = {
    "BadRequest": json_body(ref("Error"), "bad input; the message says what was expected"),
    "NotFound": json_body(ref("Error"), "no such node"),
    "Unauthorized": {
        **json_body(ref("Error"), "the token is missing"),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "Forbidden": json_body(ref("Error"), "the token is wrong"),
    "TooLong": json_body(ref("Error"), "the query string is longer than 4096 bytes"),
    "StoreDown": {
        **json_body(ref("Error"), "the node store is unavailable; try again"),
        "headers": RETRY_AFTER,
    },
}
