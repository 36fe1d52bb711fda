"""Validation of rendered Ignition (spec 3) configs against the parts of the spec they use.

Ignition runs once, in the initramfs of a node's first boot; a config it cannot parse
stops that boot at the emergency shell, which on a machine with no screen looks like a
node that never came up. So every rendered config is parsed and checked here before it
is served: ``ignition.version`` 3.x, and the sections pxeserver's templates use —
``storage.files``/``directories``/``links``, ``systemd.units`` (with drop-ins),
``passwd.users``/``groups`` and ``kernelArguments``. Unknown keys are errors, as in the
spec's own parser. Sections the check does not know in depth (``storage.disks``,
``raid``, ``filesystems``, ``luks``) must at least be lists of objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..model import unsafe_character

VERSION = re.compile(r"3\.[0-9]+\.[0-9]+(-experimental)?")
TOP_KEYS = {"ignition", "storage", "systemd", "passwd", "kernelArguments"}
IGNITION_KEYS = {"version", "config", "timeouts", "security", "proxy"}
STORAGE_KEYS = {"disks", "raid", "filesystems", "files", "directories", "links", "luks"}
NODE_KEYS = {"path", "overwrite", "user", "group"}
FILE_KEYS = NODE_KEYS | {"contents", "append", "mode"}
DIRECTORY_KEYS = NODE_KEYS | {"mode"}
LINK_KEYS = NODE_KEYS | {"target", "hard"}
RESOURCE_KEYS = {"source", "compression", "verification", "httpHeaders"}
UNIT_KEYS = {"name", "enabled", "mask", "contents", "dropins"}
USER_KEYS = {
    "name",
    "passwordHash",
    "sshAuthorizedKeys",
    "uid",
    "gecos",
    "homeDir",
    "noCreateHome",
    "primaryGroup",
    "groups",
    "noUserGroup",
    "noLogInit",
    "shell",
    "system",
    "shouldExist",
}
GROUP_KEYS = {"name", "gid", "passwordHash", "system", "shouldExist"}
SOURCE_SCHEMES = ("data:", "http://", "https://", "tftp://", "s3://", "gs://", "arn:")
UNIT_SUFFIXES = (
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".mount",
    ".automount",
    ".path",
    ".slice",
    ".scope",
    ".swap",
    ".device",
)


def validate(text: str) -> tuple[dict[str, Any], list[str]]:
    """Parse a rendered Ignition config; return the document and every error found."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return {}, [f"not valid JSON: {exc}"]
    if not isinstance(doc, dict):
        return {}, ["the document must be a JSON object"]
    errors: list[str] = []
    _unknown(doc, TOP_KEYS, "", errors)
    _ignition(doc.get("ignition"), errors)
    if "storage" in doc:
        _storage(doc["storage"], errors)
    if "systemd" in doc:
        _systemd(doc["systemd"], errors)
    if "passwd" in doc:
        _passwd(doc["passwd"], errors)
    return doc, errors


def _unknown(d: Mapping[str, Any], known: set[str], where: str, errors: list[str]) -> None:
    for key in d:
        if key not in known:
            errors.append(f"{where}{key}: unknown key (known: {', '.join(sorted(known))})")


def _objects(value: Any, where: str, errors: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The objects of a list, each with its place for messages; errors for anything else."""
    if value is None:
        return []
    if not isinstance(value, list):
        errors.append(f"{where}: must be a list")
        return []
    found = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            found.append((f"{where}[{i}]", item))
        else:
            errors.append(f"{where}[{i}]: must be an object")
    return found


def _typed(d: Mapping[str, Any], key: str, kind: type, w: str, e: list[str]) -> None:
    value = d.get(key)
    if value is None:
        return
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        e.append(f"{w}.{key}: must be {kind.__name__}, found {type(value).__name__}")


def _ignition(value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append('ignition: is required, e.g. {"version": "3.3.0"}')
        return
    _unknown(value, IGNITION_KEYS, "ignition.", errors)
    version = value.get("version")
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        errors.append(f"ignition.version: {version!r} is not a spec 3 version such as '3.3.0'")


def _storage(value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append("storage: must be an object")
        return
    _unknown(value, STORAGE_KEYS, "storage.", errors)
    paths: dict[str, str] = {}
    for section, known in (
        ("files", FILE_KEYS),
        ("directories", DIRECTORY_KEYS),
        ("links", LINK_KEYS),
    ):
        for w, node in _objects(value.get(section), f"storage.{section}", errors):
            _unknown(node, known, f"{w}.", errors)
            _node(node, w, paths, errors)
            if section != "links":
                _mode(node.get("mode"), w, errors)
            if section == "files":
                _file(node, w, errors)
            elif section == "links" and not isinstance(node.get("target"), str):
                errors.append(f"{w}.target: is required")
    for section in ("disks", "raid", "filesystems", "luks"):
        _objects(value.get(section), f"storage.{section}", errors)


def _node(node: Mapping[str, Any], w: str, paths: dict[str, str], errors: list[str]) -> None:
    path = node.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        errors.append(f"{w}.path: must be an absolute path, found {path!r}")
    elif path in paths:
        errors.append(f"{w}.path: {path} is also written by {paths[path]}")
    else:
        paths[path] = w
    _typed(node, "overwrite", bool, w, errors)
    for owner in ("user", "group"):
        who = node.get(owner)
        if who is None:
            continue
        if not isinstance(who, dict) or set(who) - {"id", "name"}:
            errors.append(f"{w}.{owner}: must be an object with id or name")


def _mode(mode: Any, w: str, errors: list[str]) -> None:
    if mode is None:
        return
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        errors.append(f"{w}.mode: {mode!r} must be a number from 0 to 4095 (0o7777)")
    elif mode in (644, 640, 600, 755, 750, 700, 444, 555):
        # JSON has no octal: 644 is decimal and means --w----r-T.
        errors.append(f"{w}.mode: {mode} is decimal in JSON; for 0{mode} write {int(str(mode), 8)}")


def _file(node: Mapping[str, Any], w: str, errors: list[str]) -> None:
    contents = node.get("contents")
    if contents is not None:
        _resource(contents, f"{w}.contents", errors)
    for rw, item in _objects(node.get("append"), f"{w}.append", errors):
        _resource(item, rw, errors)


def _resource(value: Any, w: str, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append(f"{w}: must be an object")
        return
    _unknown(value, RESOURCE_KEYS, f"{w}.", errors)
    source = value.get("source")
    if source is not None and (
        not isinstance(source, str) or not source.startswith(SOURCE_SCHEMES)
    ):
        errors.append(
            f"{w}.source: {str(source)[:60]!r} must be a data: URL or an http(s)/tftp/s3/gs URL"
        )
    compression = value.get("compression")
    if compression not in (None, "", "gzip"):
        errors.append(f"{w}.compression: {compression!r} must be gzip or empty")
    verification = value.get("verification")
    if verification is not None:
        digest = verification.get("hash") if isinstance(verification, dict) else None
        if not isinstance(digest, str) or not re.fullmatch(r"sha(256|512)-[0-9a-f]+", digest):
            errors.append(f"{w}.verification.hash: must be sha256-<hex> or sha512-<hex>")


def _systemd(value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append("systemd: must be an object")
        return
    _unknown(value, {"units"}, "systemd.", errors)
    names: set[str] = set()
    for w, unit in _objects(value.get("units"), "systemd.units", errors):
        _unknown(unit, UNIT_KEYS, f"{w}.", errors)
        name = unit.get("name")
        if not isinstance(name, str) or not name.endswith(UNIT_SUFFIXES):
            errors.append(f"{w}.name: {name!r} must be a unit name such as fleet.service")
        elif name in names:
            errors.append(f"{w}.name: {name} is listed twice")
        else:
            names.add(name)
        for flag in ("enabled", "mask"):
            _typed(unit, flag, bool, w, errors)
        _typed(unit, "contents", str, w, errors)
        for dw, drop in _objects(unit.get("dropins"), f"{w}.dropins", errors):
            _unknown(drop, {"name", "contents"}, f"{dw}.", errors)
            if not isinstance(drop.get("name"), str) or not drop["name"].endswith(".conf"):
                errors.append(f"{dw}.name: must be a file name ending in .conf")
            _typed(drop, "contents", str, dw, errors)


def _passwd(value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append("passwd: must be an object")
        return
    _unknown(value, {"users", "groups"}, "passwd.", errors)
    for w, user in _objects(value.get("users"), "passwd.users", errors):
        _unknown(user, USER_KEYS, f"{w}.", errors)
        if not isinstance(user.get("name"), str) or not user["name"]:
            errors.append(f"{w}.name: is required")
        keys = user.get("sshAuthorizedKeys")
        if keys is not None and (
            not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys)
        ):
            errors.append(f"{w}.sshAuthorizedKeys: must be a list of non-empty strings")
        for i, key in enumerate(keys if isinstance(keys, list) else []):
            bad = unsafe_character(key) if isinstance(key, str) else None
            if bad:  # each key is one line of authorized_keys
                errors.append(f"{w}.sshAuthorizedKeys[{i}]: holds {bad}; a key is one line")
        groups = user.get("groups")
        if groups is not None and (
            not isinstance(groups, list) or not all(isinstance(g, str) for g in groups)
        ):
            errors.append(f"{w}.groups: must be a list of group names")
        _typed(user, "uid", int, w, errors)
    for w, group in _objects(value.get("groups"), "passwd.groups", errors):
        _unknown(group, GROUP_KEYS, f"{w}.", errors)
        if not isinstance(group.get("name"), str) or not group["name"]:
            errors.append(f"{w}.name: is required")
        _typed(group, "gid", int, w, errors)
