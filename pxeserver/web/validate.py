"""Request bodies checked against the schemas the OpenAPI document shows (:mod:`.schemas`):
one declaration decides both what the document promises and what the API accepts.

The verdict is jsonschema's (JSON Schema 2020-12, as OpenAPI 3.1 uses); the sentence an
operator reads is said here, one per property, with the model's own descriptions of what
is wrong (the character a label may not hold, the form a hostname takes).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput
from ..model import hostname_problem, label_name_problem, label_value_problem
from .schemas import SCHEMAS, node_patch

if TYPE_CHECKING:  # jsonschema is imported at the first PATCH (CLI start-up)
    from jsonschema import ValidationError

PATCH_EXAMPLE = '{"profile": "flatcar", "labels": {"rack": "r1"}}'


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    # JSON Schema's patterns are ECMA 262 regular expressions, where a final "$" is the end
    # of the text; in Python it also matches before a final line feed ("r1\n" would pass).
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    from jsonschema import ValidationError

    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance[:40]!r} does not match {pattern!r}")


@functools.lru_cache(maxsize=8)
def _patch_validator(profiles: tuple[str, ...]) -> Any:
    from jsonschema import Draft202012Validator, validators

    validator = validators.extend(Draft202012Validator, {"pattern": _pattern})
    return validator(node_patch(list(profiles)))


def check_patch(body: Any, profiles: list[str]) -> dict[str, Any]:
    """``body`` if it is a valid PATCH of a node for a server with ``profiles``; else
    InvalidInput with one sentence saying what is wrong and what is expected."""
    from jsonschema.exceptions import best_match

    error = best_match(_patch_validator(tuple(profiles)).iter_errors(body))
    if error is None:
        return dict(body)
    raise InvalidInput(_patch_sentence(error, profiles))


def _patch_sentence(error: ValidationError, profiles: list[str]) -> str:
    where = list(error.absolute_path)
    value: Any = error.instance
    if not where:
        if error.validator == "additionalProperties":
            fields = SCHEMAS["NodePatch"]["properties"]
            return f"unknown fields {sorted(set(value) - set(fields))}; use {', '.join(fields)}"
        return f"send a JSON object, e.g. {PATCH_EXAMPLE}"
    field = where[0]
    if field == "profile":
        if isinstance(value, str):
            return f"no profile named {value!r}; the profiles are: {', '.join(profiles)}"
        return "profile must be a profile name, or null to go back to the groups"
    if field == "hostname":
        if isinstance(value, str):
            return hostname_problem(value) or f"hostname {value[:70]!r} is not allowed"
        return "hostname must be a string"
    if field == "reinstall":
        return "reinstall must be true (install again at the next boot) or false"
    if len(where) == 1:  # labels itself: not an object, or a name that is not allowed
        if "propertyNames" in error.schema_path:
            return label_name_problem(value) or f"label name {value!r} is not allowed"
        return 'labels must be an object such as {"rack": "r1"}'
    key = where[1]
    if not isinstance(value, str):
        return f"label {key}: the value must be a string (or null to remove it)"
    return f"label {key}: {label_value_problem(value) or 'the value is not allowed'}"
