"""Validation of rendered Ignition (spec 3) configs, before they are served.

Ignition runs once, in the initramfs of a node's first boot; a config it cannot parse
stops that boot at the emergency shell, which on a machine with no screen looks like a
node that never came up. So every rendered config is parsed and checked, in two parts:

- against the Ignition project's own JSON Schema of the config's spec version
  (``ignition_spec/``: specs 3.0 to 3.3 and 3.4.0-experimental, unchanged from Debian's
  source package of Ignition 2.14 by ``scripts/ignition-spec``; its SOURCE file says which
  and their SHA-256): the type of every value, and the keys each object requires. A config
  of a later 3.x spec (3.4.0, 3.5.0) is checked against the newest schema here: later
  specs add keys and keep the types of the old ones.
- what that schema does not say: ``ignition.version`` is a 3.x version; a key the spec
  does not have is an error (the keys the schema names are the known ones; Ignition
  itself only warns "Unused key" and goes on, and a misspelt ``storag`` then writes no
  file on a machine nobody watches); paths are absolute and written once; a mode is in range
  and not ``644`` written in decimal by mistake; sources are URLs Ignition fetches, with
  gzip or no compression and a sha256/sha512 hash; unit and drop-in names, each unit
  once; users and groups have names; each SSH key is one line; a link has a target.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..model import unsafe_character

if TYPE_CHECKING:  # jsonschema is imported when a config is first checked (CLI start-up)
    from jsonschema import Draft4Validator, ValidationError

VERSION = re.compile(r"3\.([0-9]+)\.[0-9]+(-experimental)?")
# The spec schemas shipped, by minor version (the newest also checks later 3.x specs).
SPECS = {0: "v3_0", 1: "v3_1", 2: "v3_2", 3: "v3_3", 4: "v3_4_experimental"}
SOURCE_SCHEMES = ("data:", "http://", "https://", "tftp://", "s3://", "gs://", "arn:")
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".target", ".mount", ".automount", ".path",
                 ".slice", ".scope", ".swap", ".device")  # fmt: skip
DECIMAL_MODES = (644, 640, 600, 755, 750, 700, 444, 555)


@functools.lru_cache(maxsize=len(SPECS))
def spec(name: str) -> Draft4Validator:
    """The validator of one shipped spec schema (``v3_3``)."""
    from jsonschema import Draft4Validator

    text = resources.files(__package__).joinpath(f"ignition_spec/{name}.json").read_text()
    return Draft4Validator(json.loads(text))


def spec_for(version: object) -> str:
    """The shipped schema a config of ``version`` is checked against."""
    m = VERSION.fullmatch(version) if isinstance(version, str) else None
    minor = int(m.group(1)) if m else max(SPECS)
    return SPECS[min(minor, max(SPECS))]


def validate(text: str) -> tuple[dict[str, Any], list[str]]:
    """Parse a rendered Ignition config; return the document and every error found."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return {}, [f"not valid JSON: {exc}"]
    if not isinstance(doc, dict):
        return {}, ["the document must be a JSON object"]
    ignition = doc.get("ignition")
    version = ignition.get("version") if isinstance(ignition, dict) else None
    errors: list[str] = []
    if isinstance(ignition, dict) and not (isinstance(version, str) and VERSION.fullmatch(version)):
        errors.append(f"ignition.version: {version!r} is not a spec 3 version such as '3.3.0'")
    validator = spec(spec_for(version))
    found = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.path])
    errors += [_said(e) for e in found]
    schema: Mapping[str, Any] = validator.schema  # type: ignore[assignment]
    errors += _unknown_keys(doc, schema, schema, "")
    _storage(doc.get("storage"), errors)
    _systemd(doc.get("systemd"), errors)
    _passwd(doc.get("passwd"), errors)
    return doc, errors


def _where(path: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _said(error: ValidationError) -> str:
    """One of the schema's verdicts as a line: where, and what was expected."""
    where = _where(error.absolute_path)
    instance: Any = error.instance
    wanted: Any = error.validator_value
    if error.validator == "type":
        expected = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return f"{where or 'the document'}: must be {expected}, found {type(instance).__name__}"
    if error.validator == "required":
        missing = next((k for k in wanted if k not in instance), "?")
        if not where:  # the one key required at the top
            return f'{missing}: is required, e.g. {{"version": "3.3.0"}}'
        return f"{where}.{missing}: is required"
    return f"{where or 'the document'}: {error.message}"


# -- keys the spec does not have -------------------------------------------------------------


def _resolved(root: Mapping[str, Any], schema: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """``schema`` and what it is made of: its ``$ref`` (a pointer into ``root``), ``allOf``."""
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        yield from _resolved(root, target)
    for part in schema.get("allOf", ()):
        yield from _resolved(root, part)
    yield schema


def _unknown_keys(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], where: str
                  ) -> list[str]:  # fmt: skip
    parts = list(_resolved(root, schema))
    found: list[str] = []
    if isinstance(value, dict):
        known: dict[str, Any] = {}
        for part in parts:
            known.update(part.get("properties", {}))
        if not known:
            return found
        for key, item in value.items():
            if key not in known:
                found.append(f"{where}{key}: unknown key (known: {', '.join(sorted(known))})")
            else:
                found += _unknown_keys(item, known[key], root, f"{where}{key}.")
    elif isinstance(value, list):
        items = next((p["items"] for p in parts if isinstance(p.get("items"), dict)), None)
        if items is not None:
            for i, item in enumerate(value):
                found += _unknown_keys(item, items, root, f"{where.rstrip('.')}[{i}].")
    return found


# -- what the schema cannot say --------------------------------------------------------------


def _objects(value: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """The objects of a list, each with its place for messages (the schema says the rest)."""
    if not isinstance(value, list):
        return []
    return [(f"{where}[{i}]", item) for i, item in enumerate(value) if isinstance(item, dict)]


def _storage(value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        return
    paths: dict[str, str] = {}
    for section in ("files", "directories", "links"):
        for w, node in _objects(value.get(section), f"storage.{section}"):
            _path(node.get("path"), w, paths, errors)
            _mode(node.get("mode"), w, errors)
            if section == "links" and node.get("target") is None:
                errors.append(f"{w}.target: is required")
            if section == "files":
                if isinstance(node.get("contents"), dict):
                    _resource(node["contents"], f"{w}.contents", errors)
                for rw, item in _objects(node.get("append"), f"{w}.append"):
                    _resource(item, rw, errors)


def _path(path: Any, w: str, paths: dict[str, str], errors: list[str]) -> None:
    if not isinstance(path, str) or not path.startswith("/"):
        errors.append(f"{w}.path: must be an absolute path, found {path!r}")
    elif path in paths:
        errors.append(f"{w}.path: {path} is also written by {paths[path]}")
    else:
        paths[path] = w


def _mode(mode: Any, w: str, errors: list[str]) -> None:
    if not isinstance(mode, int) or isinstance(mode, bool):
        return  # none, or not a number: the schema says so
    if not 0 <= mode <= 0o7777:
        errors.append(f"{w}.mode: {mode!r} must be a number from 0 to 4095 (0o7777)")
    elif mode in DECIMAL_MODES:
        # JSON has no octal: 644 is decimal and means --w----r-T.
        errors.append(f"{w}.mode: {mode} is decimal in JSON; for 0{mode} write {int(str(mode), 8)}")


def _resource(value: Mapping[str, Any], w: str, errors: list[str]) -> None:
    source = value.get("source")
    if isinstance(source, str) and not source.startswith(SOURCE_SCHEMES):
        errors.append(
            f"{w}.source: {source[:60]!r} must be a data: URL or an http(s)/tftp/s3/gs URL"
        )
    compression = value.get("compression")
    if compression not in (None, "", "gzip"):
        errors.append(f"{w}.compression: {compression!r} must be gzip or empty")
    verification = value.get("verification")
    digest = verification.get("hash") if isinstance(verification, dict) else None
    if isinstance(digest, str) and not re.fullmatch(r"sha(256|512)-[0-9a-f]+", digest):
        errors.append(f"{w}.verification.hash: must be sha256-<hex> or sha512-<hex>")


def _systemd(value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        return
    names: set[str] = set()
    for w, unit in _objects(value.get("units"), "systemd.units"):
        name = unit.get("name")
        if not isinstance(name, str) or not name.endswith(UNIT_SUFFIXES):
            errors.append(f"{w}.name: {name!r} must be a unit name such as fleet.service")
        elif name in names:
            errors.append(f"{w}.name: {name} is listed twice")
        else:
            names.add(name)
        for dw, drop in _objects(unit.get("dropins"), f"{w}.dropins"):
            if not isinstance(drop.get("name"), str) or not drop["name"].endswith(".conf"):
                errors.append(f"{dw}.name: must be a file name ending in .conf")


def _passwd(value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        return
    for section in ("users", "groups"):
        for w, entry in _objects(value.get(section), f"passwd.{section}"):
            if entry.get("name") == "":
                errors.append(f"{w}.name: must not be empty")
    for w, user in _objects(value.get("users"), "passwd.users"):
        keys = user.get("sshAuthorizedKeys")
        for i, key in enumerate(keys if isinstance(keys, list) else []):
            if key == "":
                errors.append(f"{w}.sshAuthorizedKeys[{i}]: must not be empty")
            bad = unsafe_character(key) if isinstance(key, str) else None
            if bad:  # each key is one line of authorized_keys
                errors.append(f"{w}.sshAuthorizedKeys[{i}]: holds {bad}; a key is one line")
