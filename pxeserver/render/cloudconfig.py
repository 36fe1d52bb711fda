"""Validation of rendered cloud-configs, held to coreos-cloudinit's own rules.

coreos-cloudinit silently ignores what it does not understand, so a typo in a template
becomes a node that boots without its units. pxeserver refuses to serve such a file:
every rendered cloud-config is parsed and checked here before it goes on the wire.

The rules are those of ``coreos-cloudinit -validate`` (v1.14, the last release): the keys
and value kinds of its config types, with ``-`` and ``_`` alike in key names; a string
field takes any plain scalar as written (``0644``, ``on``), a boolean field only a YAML
boolean; the values its ``valid`` patterns allow; no file under /usr. The test suite runs
the real validator beside this module on every config the shipped templates render and
on a corpus of good and bad ones (tests/render/test_cloudconfig_engine.py). Deliberately
stricter than the real engine, because the engine accepts them and the node then fails:
the ``#cloud-config`` first line exactly; a valid host name; unit names with a type
suffix, each once; drop-in names ending in ``.conf``; absolute file paths and decodable
contents; users with names; ``manage_etc_hosts`` only ``localhost``; no control or
line-break characters but LF and tab anywhere, none at all in an item that becomes a line
of a file (SSH keys, groups), and no quote or backslash in a value that coreos-cloudinit
writes into a unit's ``Environment="K=V"`` as it is (the coreos sections). The real engine's
deprecation warnings (``etcd2`` and ``fleet`` are what these nodes run) are not errors.

Every error names the line of the config it is about. :mod:`pxeserver.render.engine` runs
the real validator, where its binary exists (``pxeserver check``, the tests).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
from collections.abc import Iterator
from typing import Any, TypeAlias

import yaml

from ..model import unsafe_character

HEADER = "#cloud-config"

# Value kinds, as coreos-cloudinit's Go types have them.
STR, BOOL, INT, FLOAT = "a string", "true or false", "an integer", "a number"
Shape: TypeAlias = str | dict[str, "Shape"] | list["Shape"]  # a kind, mapping, [element]


def _kinds(kind: str, names: str) -> dict[str, Shape]:
    """``{name: kind}`` for each of the space-separated ``names``."""
    return dict.fromkeys(names.split(), kind)


ETCD2: dict[str, Shape] = {
    **_kinds(
        STR,
        "advertise_client_urls ca_file cert_file cors data_dir discovery discovery_fallback "
        "discovery_srv discovery_proxy initial_advertise_peer_urls initial_cluster "
        "initial_cluster_state initial_cluster_token key_file listen_client_urls "
        "listen_peer_urls log_package_levels name peer_ca_file peer_cert_file peer_key_file "
        "peer_trusted_ca_file proxy trusted_ca_file wal_dir",
    ),
    **_kinds(
        INT,
        "election_timeout heartbeat_interval max_snapshots max_wals proxy_dial_timeout "
        "proxy_failure_wait proxy_read_timeout proxy_refresh_interval proxy_write_timeout "
        "snapshot_count",
    ),
    **_kinds(
        BOOL,
        "client_cert_auth debug enable_pprof force_new_cluster peer_client_cert_auth "
        "strict_reconfig_check",
    ),
}
ETCD: dict[str, Shape] = {
    **_kinds(
        STR,
        "addr advertise_client_urls bind_addr ca_file cert_file cors data_dir discovery "
        "discovery_fallback discovery_srv discovery_proxy graphite_host "
        "initial_advertise_peer_urls initial_cluster initial_cluster_state "
        "initial_cluster_token key_file listen_client_urls listen_peer_urls name peer_addr "
        "peer_bind_addr peer_ca_file peer_cert_file peer_key_file peers peers_file proxy "
        "trace",
    ),
    **_kinds(
        INT,
        "cluster_active_size election_timeout heartbeat_interval max_result_buffer "
        "max_retry_attempts max_snapshots max_wals peer_election_timeout "
        "peer_heartbeat_interval snapshot_count",
    ),
    **_kinds(
        FLOAT,
        "cluster_remove_delay cluster_sync_interval http_read_timeout http_write_timeout "
        "retry_interval",
    ),
    **_kinds(BOOL, "force_new_cluster snapshot verbose very_verbose very_very_verbose"),
}
FLEET: dict[str, Shape] = {
    **_kinds(
        STR,
        "agent_ttl authorized_keys_file etcd_cafile etcd_certfile etcd_keyfile "
        "etcd_key_prefix etcd_servers etcd_username etcd_password metadata public_ip",
    ),
    "disable_engine": BOOL,
    "verify_units": BOOL,
    "engine_reconcile_interval": FLOAT,
    "etcd_request_timeout": FLOAT,
    "token_limit": INT,
    "verbosity": INT,
}
FLANNEL: dict[str, Shape] = _kinds(
    STR,
    "etcd_endpoints etcd_cafile etcd_certfile etcd_keyfile etcd_prefix etcd_username "
    "etcd_password ip_masq subnet_file interface public_ip",
)
LOCKSMITH: dict[str, Shape] = _kinds(
    STR,
    "endpoint etcd_cafile etcd_certfile etcd_keyfile etcd_username etcd_password group "
    "window_start window_length",
)
OEM: dict[str, Shape] = _kinds(STR, "id name version_id home_url bug_report_url")
UPDATE: dict[str, Shape] = _kinds(STR, "reboot_strategy group server")
UNIT: dict[str, Shape] = {
    "name": STR,
    "mask": BOOL,
    "enable": BOOL,
    "runtime": BOOL,
    "content": STR,
    "command": STR,
    "drop_ins": [{"name": STR, "content": STR}],
}
FILE: dict[str, Shape] = _kinds(STR, "encoding content owner path permissions")
USER: dict[str, Shape] = {
    **_kinds(
        STR,
        "name passwd coreos_ssh_import_github coreos_ssh_import_url gecos homedir "
        "primary_group shell",
    ),
    "ssh_authorized_keys": [STR],
    "coreos_ssh_import_github_users": [STR],
    "groups": [STR],
    **_kinds(BOOL, "no_create_home no_user_group system no_log_init"),
}
CLOUD_CONFIG: dict[str, Shape] = {
    "ssh_authorized_keys": [STR],
    "coreos": {
        "etcd": ETCD,
        "etcd2": ETCD2,
        "flannel": FLANNEL,
        "fleet": FLEET,
        "locksmith": LOCKSMITH,
        "oem": OEM,
        "update": UPDATE,
        "units": [UNIT],
    },
    "write_files": [FILE],
    "hostname": STR,
    "users": [USER],
    "manage_etc_hosts": STR,
}

UNIT_COMMANDS = [
    "start",
    "stop",
    "restart",
    "reload",
    "try-restart",
    "reload-or-restart",
    "reload-or-try-restart",
]
ENCODINGS = ["base64", "b64", "gz", "gzip", "gz+base64", "gzip+base64", "gz+b64", "gzip+b64"]
# The values coreos-cloudinit's `valid` patterns allow, by where the key is (indexes
# dropped); an empty value is always allowed. Each with what the error says instead.
VALID: dict[str, tuple[re.Pattern[str], str]] = {
    "coreos.units.command": (
        re.compile("|".join(re.escape(c) for c in UNIT_COMMANDS)),
        f"is not one of {', '.join(UNIT_COMMANDS)}",
    ),
    "write_files.encoding": (
        re.compile("|".join(re.escape(e) for e in ENCODINGS)),
        f"is not one of {', '.join(ENCODINGS)}",
    ),
    "write_files.permissions": (
        re.compile(r"0?[0-7]{3,4}"),
        "is not an octal mode such as 0644",
    ),
    "coreos.etcd2.proxy": (re.compile("on|off|readonly"), "must be on, off or readonly"),
    "coreos.update.reboot_strategy": (
        re.compile("etcd-lock|reboot|off"),
        "is not one of etcd-lock, reboot, off",
    ),
    "coreos.locksmith.window_start": (
        re.compile(
            r"((?i:sun|mon|tue|wed|thu|fri|sat) )?0*([0-9]|1[0-9]|2[0-3]):0*([0-9]|[1-5][0-9])"
        ),
        "is not a time such as 'Sun 02:00' or '23:30'",
    ),
    "coreos.locksmith.window_length": (
        re.compile(r"[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+"),
        "is not a duration such as 1h30m",
    ),
}
# libyaml's parser when the wheel has it (Debian's and PyPI's do): the same documents and
# types, about ten times faster than the pure-Python parser, which was 80% of the time of
# serving a cloud-config.
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
_TAG = "tag:yaml.org,2002:"
# What a YAML scalar of each resolved type may fill, as coreos-cloudinit reads YAML: a
# string field takes any scalar (as written), the others only their own kind.
_FILLS = {
    STR: {"str", "int", "float", "bool", "timestamp"},
    BOOL: {"bool"},
    INT: {"int"},
    FLOAT: {"int", "float"},
}


def validate(text: str) -> tuple[dict[str, Any], list[str]]:
    """Parse a rendered cloud-config; return the document and every error found."""
    errors: list[str] = []
    first = text.split("\n", 1)[0].rstrip()
    if first != HEADER:
        errors.append(f"line 1: the first line must be exactly {HEADER!r}, found {first[:40]!r}")
    bad = unsafe_character(text.replace("\n", "").replace("\t", ""))
    if bad:
        return {}, [*errors, f"holds {bad}; a cloud-config is text with LF line ends"]
    loader = SAFE_LOADER(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return {}, errors
        if not isinstance(root, yaml.MappingNode):
            return {}, [*errors, "the document must be a mapping of keys"]
        doc: dict[str, Any] = loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        return {}, [*errors, f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"]
    finally:
        loader.dispose()
    _shape(root, CLOUD_CONFIG, "", errors)
    _stricter(root, errors)
    return doc, errors


# -- coreos-cloudinit's own rules: keys, kinds, valid values ------------------------------


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _kind(node: yaml.Node) -> str:
    """What YAML resolved a scalar to: str, int, float, bool, null, timestamp…"""
    tag = str(node.tag)
    return tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _items(node: yaml.MappingNode) -> Iterator[tuple[str, str, yaml.Node]]:
    """(key as written, key with '-' read as '_', value node) of a mapping node."""
    for key, value in node.value:
        written = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
        yield written, written.replace("-", "_"), value


def _shape(node: yaml.Node, shape: Shape, where: str, errors: list[str]) -> None:
    """Check ``node`` against ``shape``: known keys, value kinds, allowed values."""
    at = f"line {_line(node)}: {where or 'the document'}"
    if isinstance(node, yaml.ScalarNode) and _kind(node) == "null":
        return  # an empty value: the field's zero value, which is always allowed
    if isinstance(shape, dict):
        if not isinstance(node, yaml.MappingNode):
            errors.append(f"{at}: must be a mapping of keys")
            return
        for written, key, value in _items(node):
            path = f"{where}.{written}" if where else written
            if key not in shape:
                known = ", ".join(sorted(shape))
                errors.append(f"line {_line(value)}: {path}: unknown key (known: {known})")
            else:
                _shape(value, shape[key], path, errors)
        return
    if isinstance(shape, list):
        if not isinstance(node, yaml.SequenceNode):
            errors.append(f"{at}: must be a list")
            return
        for i, item in enumerate(node.value):
            _shape(item, shape[0], f"{where}[{i}]", errors)
        return
    if not isinstance(node, yaml.ScalarNode) or _kind(node) not in _FILLS[shape]:
        found = _kind(node) if isinstance(node, yaml.ScalarNode) else type(node).__name__
        errors.append(f"{at}: must be {shape}, found {found.replace('Node', '').lower()}")
        return
    rule = VALID.get(re.sub(r"\[\d+\]", "", where).replace("-", "_"))
    if rule is not None and node.value and not rule[0].fullmatch(str(node.value)):
        errors.append(f"{at}: {node.value!r} {rule[1]}")


# -- stricter than coreos-cloudinit (see the module's doc) ---------------------------------


def _value(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    for _, k, value in _items(node):
        if k == key:
            return value
    return None


def _mappings(node: yaml.Node | None, where: str) -> Iterator[tuple[str, yaml.MappingNode]]:
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            if isinstance(item, yaml.MappingNode):
                yield f"{where}[{i}]", item


def _scalar(node: yaml.Node | None) -> str | None:
    if isinstance(node, yaml.ScalarNode) and _kind(node) != "null":
        return str(node.value)
    return None


def _stricter(root: yaml.MappingNode, errors: list[str]) -> None:
    hostname = _value(root, "hostname")
    name = _scalar(hostname)
    if hostname is not None and (name is None or not _valid_hostname(name)):
        errors.append(f"line {_line(hostname)}: hostname: {name!r} is not a valid host name")
    _lines_of_a_file(_value(root, "ssh_authorized_keys"), "ssh_authorized_keys", errors)
    etc_hosts = _value(root, "manage_etc_hosts")
    if _scalar(etc_hosts) not in (None, "localhost"):
        assert etc_hosts is not None
        errors.append(f"line {_line(etc_hosts)}: manage_etc_hosts: only 'localhost' is understood")
    for where, user in _mappings(_value(root, "users"), "users"):
        if not _scalar(_value(user, "name")):
            errors.append(f"line {_line(user)}: {where}.name: is required")
        for key in ("groups", "ssh_authorized_keys"):
            _lines_of_a_file(_value(user, key), f"{where}.{key}", errors)
    for where, f in _mappings(_value(root, "write_files"), "write_files"):
        _file(where, f, errors)
    coreos = _value(root, "coreos")
    if isinstance(coreos, yaml.MappingNode):
        _units(_value(coreos, "units"), errors)
        for _, section, settings in _items(coreos):
            if section in ENV_SECTIONS and isinstance(settings, yaml.MappingNode):
                for written, _, value in _items(settings):
                    text = _scalar(value)
                    if text is not None:
                        _env_value(text, f"line {_line(value)}: coreos.{section}.{written}", errors)


def _lines_of_a_file(node: yaml.Node | None, where: str, errors: list[str]) -> None:
    """Each item is one line of a file (authorized_keys, group): no line breaks."""
    if not isinstance(node, yaml.SequenceNode):
        return
    for i, item in enumerate(node.value):
        text = _scalar(item)
        if not text:
            errors.append(f"line {_line(item)}: {where}[{i}]: must not be empty")
        elif bad := unsafe_character(text):
            errors.append(
                f"line {_line(item)}: {where}[{i}]: holds {bad}; each item is one line of a file"
            )


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


def _valid_hostname(name: str) -> bool:
    return len(name) <= 253 and _HOSTNAME.fullmatch(name) is not None


def _file(where: str, f: yaml.MappingNode, errors: list[str]) -> None:
    path = _scalar(_value(f, "path"))
    if path is None or not path.startswith("/"):
        errors.append(f"line {_line(f)}: {where}.path: must be an absolute path, found {path!r}")
    elif path.startswith("/usr/") or path == "/usr":
        # coreos-cloudinit's own rule: /usr is read-only on Container Linux and Flatcar.
        errors.append(f"line {_line(f)}: {where}.path: {path} is on the read-only /usr")
    encoding = _scalar(_value(f, "encoding")) or ""
    content = _scalar(_value(f, "content")) or ""
    if encoding in ENCODINGS and not _decodes(content, encoding):
        errors.append(f"line {_line(f)}: {where}.content: cannot be decoded as {encoding}")


def _decodes(content: str, encoding: str) -> bool:
    data = content.encode()
    try:
        if encoding.endswith(("base64", "b64")):
            # Strict, as Go's decoder is, but for line breaks, which it skips.
            data = base64.b64decode(data.replace(b"\r", b"").replace(b"\n", b""), validate=True)
        if encoding.startswith("gz"):
            gzip.decompress(data)
    except (binascii.Error, ValueError, OSError, EOFError):
        return False
    return True


def _units(units: yaml.Node | None, errors: list[str]) -> None:
    names: set[str] = set()
    for where, unit in _mappings(units, "coreos.units"):
        name = _scalar(_value(unit, "name"))
        at = f"line {_line(unit)}: {where}"
        if name is None or "." not in name:
            errors.append(f"{at}.name: {name!r} must be a unit file name such as fleet.service")
        elif name in names:
            errors.append(f"{at}.name: {name} is listed twice")
        else:
            names.add(name)
        for w, drop in _mappings(_value(unit, "drop_ins"), f"{where}.drop_ins"):
            drop_name = _scalar(_value(drop, "name"))
            if drop_name is None or not drop_name.endswith(".conf"):
                errors.append(f"line {_line(drop)}: {w}.name: {drop_name!r} must end in .conf")


# The coreos sections whose values coreos-cloudinit writes into unit drop-ins or
# update.conf as they are.
ENV_SECTIONS = {"etcd", "etcd2", "flannel", "fleet", "locksmith", "update", "oem"}
