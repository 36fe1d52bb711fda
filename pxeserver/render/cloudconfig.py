"""Validation of rendered cloud-configs against the coreos-cloudinit rules that matter.

coreos-cloudinit silently ignores what it does not understand, so a typo in a template
becomes a node that boots without its units. pxeserver refuses to serve such a file:
every rendered cloud-config is parsed and checked here before it goes on the wire.
The rules follow coreos-cloudinit's config types (header, ``coreos`` section, units,
write_files, users); keys it ignores are errors here, because nobody writes a key that
is meant to be ignored.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from ..model import unsafe_character

HEADER = "#cloud-config"

TOP_KEYS = {
    "coreos",
    "hostname",
    "ssh_authorized_keys",
    "users",
    "write_files",
    "manage_etc_hosts",
}
COREOS_KEYS = {"etcd", "etcd2", "fleet", "flannel", "locksmith", "update", "units", "oem"}
UNIT_KEYS = {"name", "runtime", "enable", "content", "command", "mask", "drop-ins", "drop_ins"}
UNIT_COMMANDS = {
    "start",
    "stop",
    "restart",
    "reload",
    "try-restart",
    "reload-or-restart",
    "reload-or-try-restart",
}
FILE_KEYS = {"path", "content", "encoding", "owner", "permissions"}
ENCODINGS = {"", "b64", "base64", "gz", "gzip", "gz+base64", "gzip+base64", "gz+b64", "gzip+b64"}
USER_KEYS = {
    "name",
    "passwd",
    "gecos",
    "homedir",
    "no-create-home",
    "primary-group",
    "groups",
    "no-user-group",
    "ssh-authorized-keys",
    "coreos-ssh-import-github",
    "coreos-ssh-import-github-users",
    "coreos-ssh-import-url",
    "system",
    "no-log-init",
    "shell",
}
FLEET_KEYS = {
    "agent_ttl",
    "authorized_keys_file",
    "disable_engine",
    "disable_watches",
    "enable_grpc",
    "engine_reconcile_interval",
    "etcd_cafile",
    "etcd_certfile",
    "etcd_key_prefix",
    "etcd_keyfile",
    "etcd_request_timeout",
    "etcd_servers",
    "metadata",
    "public_ip",
    "token_limit",
    "verbosity",
    "verify_units",
}
UPDATE_KEYS = {"reboot-strategy", "reboot_strategy", "group", "server"}
REBOOT_STRATEGIES = {"best-effort", "etcd-lock", "reboot", "off"}
LOCKSMITH_KEYS = {
    "endpoint",
    "etcd_cafile",
    "etcd_certfile",
    "etcd_keyfile",
    "group",
    "window_start",
    "window_length",
}
# libyaml's parser under PyYAML's safe constructor when the wheel has it (Debian's and
# PyPI's do): the same documents and types, about ten times faster than the pure-Python
# parser, which was 80% of the time of serving a cloud-config.
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PERMISSIONS = re.compile(r"0?[0-7]{3,4}")
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


def validate(text: str) -> tuple[dict[str, Any], list[str]]:
    """Parse a rendered cloud-config; return the document and every error found."""
    errors: list[str] = []
    first = text.split("\n", 1)[0].rstrip()
    if first != HEADER:
        errors.append(f"the first line must be exactly {HEADER!r}, found {first[:40]!r}")
    bad = unsafe_character(text.replace("\n", "").replace("\t", ""))
    if bad:
        return {}, [*errors, f"holds {bad}; a cloud-config is text with LF line ends"]
    try:
        doc = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        return {}, [*errors, f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"]
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        return {}, [*errors, "the document must be a mapping of keys"]
    _unknown(doc, TOP_KEYS, "", errors)
    if "hostname" in doc:
        _hostname(doc["hostname"], errors)
    if "ssh_authorized_keys" in doc:
        _string_list(doc["ssh_authorized_keys"], "ssh_authorized_keys", errors)
    if "manage_etc_hosts" in doc and doc["manage_etc_hosts"] not in ("localhost", "", None):
        errors.append("manage_etc_hosts: only 'localhost' is understood")
    _users(doc.get("users"), errors)
    _files(doc.get("write_files"), errors)
    if "coreos" in doc:
        _coreos(doc["coreos"], errors)
    return doc, errors


def _unknown(d: Mapping[str, Any], known: set[str], where: str, errors: list[str]) -> None:
    for key in d:
        if key not in known:
            errors.append(f"{where}{key}: unknown key (known: {', '.join(sorted(known))})")


def _hostname(value: Any, errors: list[str]) -> None:
    if not isinstance(value, str) or not _HOSTNAME.fullmatch(value) or len(value) > 253:
        errors.append(f"hostname: {value!r} is not a valid host name")


def _string_list(value: Any, where: str, errors: list[str]) -> None:
    """Each item is one line of a file (authorized_keys, group): no line breaks."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        errors.append(f"{where}: must be a list of non-empty strings")
        return
    for i, item in enumerate(value):
        bad = unsafe_character(item)
        if bad:
            errors.append(f"{where}[{i}]: holds {bad}; each item is one line of a file")


def _mappings(value: Any, where: str, errors: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The mappings of an optional list, each with its ``where[i].`` prefix; errors for the rest."""
    if value is None:
        return
    if not isinstance(value, list):
        errors.append(f"{where}: must be a list")
        return
    for i, item in enumerate(value):
        if isinstance(item, dict):
            yield f"{where}[{i}].", item
        else:
            errors.append(f"{where}[{i}]: must be a mapping")


def _users(value: Any, errors: list[str]) -> None:
    for w, user in _mappings(value, "users", errors):
        _unknown(user, USER_KEYS, w, errors)
        if not isinstance(user.get("name"), str) or not user["name"]:
            errors.append(f"{w}name: is required")
        if "groups" in user:
            _string_list(user["groups"], f"{w}groups", errors)
        if "ssh-authorized-keys" in user:
            _string_list(user["ssh-authorized-keys"], f"{w}ssh-authorized-keys", errors)


def _files(value: Any, errors: list[str]) -> None:
    for w, f in _mappings(value, "write_files", errors):
        _unknown(f, FILE_KEYS, w, errors)
        path = f.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            errors.append(f"{w}path: must be an absolute path, found {path!r}")
        perms = f.get("permissions")
        # YAML reads 0644 as the integer 420: coreos-cloudinit wants the string form.
        if perms is not None and (not isinstance(perms, str) or not _PERMISSIONS.fullmatch(perms)):
            errors.append(
                f"{w}permissions: {perms!r} must be an octal string in quotes, e.g. '0644'"
            )
        encoding = f.get("encoding", "")
        if encoding not in ENCODINGS:
            errors.append(f"{w}encoding: {encoding!r} is not one of {sorted(ENCODINGS)}")
        content = f.get("content", "")
        if not isinstance(content, str):
            errors.append(f"{w}content: must be a string")
        elif encoding and "b" in encoding.split("+")[-1]:
            try:
                base64.b64decode(content, validate=False)
            except ValueError:
                errors.append(f"{w}content: is not valid base64")


def _scalars(value: Any, where: str, errors: list[str], known: set[str] | None = None) -> None:
    if not isinstance(value, dict):
        errors.append(f"{where}: must be a mapping")
        return
    if known is not None:
        _unknown(value, known, f"{where}.", errors)
    for key, v in value.items():
        if isinstance(v, (dict, list)):
            errors.append(f"{where}.{key}: must be a single value, not a {type(v).__name__}")
        elif isinstance(v, str):
            _env_value(v, f"{where}.{key}", errors)


def _env_value(value: str, where: str, errors: list[str]) -> None:
    """coreos-cloudinit writes these values into a unit's drop-in as ``Environment="K=V"``
    (update.conf: ``K=V``): a line break there is a new line of the unit, a quote or a
    backslash ends or escapes the quoting."""
    bad = unsafe_character(value) or ('a quote (")' if '"' in value else None)
    bad = bad or ("a backslash" if "\\" in value else None)
    if bad:
        errors.append(
            f"{where}: {value[:40]!r} holds {bad}, which coreos-cloudinit would write into "
            "a unit file as it is"
        )


def _coreos(value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append("coreos: must be a mapping")
        return
    _unknown(value, COREOS_KEYS, "coreos.", errors)
    for section in ("etcd", "etcd2", "flannel", "oem"):
        if section in value:
            _scalars(value[section], f"coreos.{section}", errors)
    etcd2 = value.get("etcd2")
    if (
        isinstance(etcd2, dict)
        and "proxy" in etcd2
        and etcd2["proxy"] not in ("on", "off", "readonly")
    ):
        errors.append(f"coreos.etcd2.proxy: {etcd2['proxy']!r} must be on, off or readonly")
    if "fleet" in value:
        _scalars(value["fleet"], "coreos.fleet", errors, FLEET_KEYS)
    if "locksmith" in value:
        _scalars(value["locksmith"], "coreos.locksmith", errors, LOCKSMITH_KEYS)
    update = value.get("update")
    if update is not None:
        _scalars(update, "coreos.update", errors, UPDATE_KEYS)
        if isinstance(update, dict):
            strategy = update.get("reboot-strategy", update.get("reboot_strategy"))
            if strategy is not None and strategy not in REBOOT_STRATEGIES:
                errors.append(
                    f"coreos.update.reboot-strategy: {strategy!r} is not one of "
                    f"{sorted(REBOOT_STRATEGIES)}"
                )
    _units(value.get("units"), errors)


def _units(value: Any, errors: list[str]) -> None:
    names: set[str] = set()
    for w, unit in _mappings(value, "coreos.units", errors):
        _unknown(unit, UNIT_KEYS, w, errors)
        name = unit.get("name")
        if not isinstance(name, str) or "." not in name:
            errors.append(f"{w}name: {name!r} must be a unit file name such as fleet.service")
        elif name in names:
            errors.append(f"{w}name: {name} is listed twice")
        else:
            names.add(name)
        command = unit.get("command")
        if command is not None and command not in UNIT_COMMANDS:
            errors.append(f"{w}command: {command!r} is not one of {sorted(UNIT_COMMANDS)}")
        for flag in ("runtime", "enable", "mask"):
            if flag in unit and not isinstance(unit[flag], bool):
                errors.append(f"{w}{flag}: must be true or false")
        if "content" in unit and not isinstance(unit["content"], str):
            errors.append(f"{w}content: must be a string")
        for key in ("drop-ins", "drop_ins"):
            for j, drop in enumerate(unit.get(key) or []):
                if not isinstance(drop, dict) or not isinstance(drop.get("name"), str):
                    errors.append(f"{w}{key}[{j}]: needs a name and content")
                elif not drop["name"].endswith(".conf"):
                    errors.append(f"{w}{key}[{j}].name: {drop['name']!r} must end in .conf")
