"""The domain types: MAC addresses, node records, states and events.

Everything here is plain data with no I/O. A MAC is parsed once, at the edge, into
:class:`MAC`; nothing else in pxeserver parses MAC strings.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import os
import random
import re
import secrets
import time
import unicodedata
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import jsontext
from .errors import InvalidInput

_CANONICAL = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")  # the one spelling

MAC_FORMS = "aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabbccddeeff or aabb.ccdd.eeff"

# The patterns of this module are written once, in the syntax both Python's ``re`` and
# JSON Schema (ECMA 262) read: the model checks with them, and the API's OpenAPI document
# (pxeserver.web.schemas) shows and validates with them.
_HEX = "[0-9A-Fa-f]"
# Exactly the four spellings of MAC_FORMS (blanks around them aside), in either case.
MAC_PATTERN = (
    f"^({_HEX}{{12}}|{_HEX}{{4}}\\.{_HEX}{{4}}\\.{_HEX}{{4}}"
    f"|{_HEX}{{1,2}}(:{_HEX}{{1,2}}){{5}}|{_HEX}{{1,2}}(-{_HEX}{{1,2}}){{5}})$"
)
_MAC = re.compile(MAC_PATTERN)


@dataclass(frozen=True, order=True, slots=True)
class MAC:
    """A 48-bit Ethernet address, always held as lower-case ``aa:bb:cc:dd:ee:ff``."""

    value: str

    @classmethod
    def parse(cls, text: object) -> MAC:
        """Accept the four common spellings; raise :class:`InvalidInput` for anything else."""
        if isinstance(text, MAC):
            return text
        if isinstance(text, str) and len(text) == 17 and _CANONICAL.fullmatch(text):
            return cls(text)  # already the one spelling: every boot request's MAC, every record
        if not isinstance(text, str) or len(text) > 32:
            raise InvalidInput(f"not a MAC address: expected {MAC_FORMS}")
        s = text.strip().lower()
        if not _MAC.fullmatch(s):
            raise InvalidInput(f"not a MAC address: {text[:32]!r}; expected {MAC_FORMS}")
        if ":" in s or "-" in s:
            digits = "".join(part.zfill(2) for part in re.split(r"[:-]", s))
        else:
            digits = s.replace(".", "")
        return cls(":".join(digits[i : i + 2] for i in range(0, 12, 2)))

    @classmethod
    def from_bytes(cls, raw: bytes) -> MAC:
        if len(raw) != 6:
            raise InvalidInput(f"a MAC address has 6 bytes, got {len(raw)}")
        return cls(":".join(f"{b:02x}" for b in raw))

    @property
    def hex(self) -> str:
        """``aabbccddeeff``: for file names and hostnames."""
        return self.value.replace(":", "")

    @property
    def dashed(self) -> str:
        """``aa-bb-cc-dd-ee-ff``: the PXELINUX spelling."""
        return self.value.replace(":", "-")

    def __str__(self) -> str:
        return self.value


def parse_uuid(text: str | None) -> str | None:
    """Normalise a machine UUID (SMBIOS, as iPXE's ``${uuid}`` prints it) or return None."""
    if text is None or text.strip() == "":
        return None
    try:
        return str(uuidlib.UUID(text.strip()))
    except ValueError as exc:
        raise InvalidInput(f"not a UUID: {text[:40]!r}; expected 8-4-4-4-12 hex digits") from exc


# Control characters (C0, DEL and C1, which holds U+0085 NEXT LINE), lone surrogates and
# the Unicode line and paragraph separators. YAML reads CR, U+0085, U+2028 and U+2029 as
# line breaks, like LF; iPXE, systemd and fleet's config reader split lines at LF and
# words at ASCII whitespace; a surrogate is not text at all. None may be in a value
# that reaches a config or script (labels, hostnames, metadata, reported facts).
# The class is exactly the Unicode categories Cc, Zl, Zp and Cs: a regular expression
# scans a whole rendered config in C (a lookup of each character's category doubled the
# time of serving a cloud-config).
_LINE_BREAKS = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029"  # (as regex escapes, for patterns)
_UNSAFE = re.compile(f"[{_LINE_BREAKS}\\ud800-\\udfff]")
_NAMES = {"\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\t": "TAB", "\x85": "NEXT LINE"}


def unsafe_character(text: str) -> str | None:
    """The first character of ``text`` that no value may carry, described for an error
    message (``U+2028 LINE SEPARATOR``), or None if there is none."""
    found = _UNSAFE.search(text)
    if found is None:
        return None
    ch = found.group()
    fallback = "a lone surrogate" if "\ud800" <= ch <= "\udfff" else "a control character"
    return f"U+{ord(ch):04X} ({_NAMES.get(ch) or unicodedata.name(ch, fallback)})"


# Labels become fleet metadata (metadata="key=value,key=value" in fleet.conf, or the
# FLEET_METADATA of fleet's drop-in): a name is a plain word; a value is one line of text
# without the characters that would end or split that line.
LABEL_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.\\-/]{0,62}$"
LABEL_NAME = re.compile(LABEL_NAME_PATTERN)
LABEL_VALUE_MAX = 253
_LABEL_VALUE_SEPARATORS = {'"': "a quote", ",": "a comma", "=": "'='", "\\": "a backslash"}
# One line of text: no control character or line break, no separator of fleet's metadata,
# no Unicode non-character (U+FFFE, U+FFFF); at most LABEL_VALUE_MAX characters. A lone
# surrogate is refused too (label_value_problem), but not named in the pattern: it is not
# text (UTF-8 cannot carry one; only JSON's \\u escapes can), and with a surrogate range
# in the class schemathesis generated C1 characters as matching it.
LABEL_VALUE_PATTERN = f'^[^{_LINE_BREAKS}\\ufffe\\uffff",=\\\\]*$'
LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)


def label_name_problem(name: object) -> str | None:
    """What is wrong with a label name (or fleet metadata key), or None."""
    if isinstance(name, str) and LABEL_NAME.fullmatch(name):
        return None
    return (
        f"label name {str(name)[:70]!r} is invalid: use up to 63 letters, digits, '_', '.', "
        "'-' or '/', starting with a letter or digit"
    )


def label_value_problem(value: str) -> str | None:
    """What is wrong with a label value (or fleet metadata value), or None."""
    if len(value) > LABEL_VALUE_MAX:
        return f"the value is longer than {LABEL_VALUE_MAX} characters"
    if LABEL_VALUE.fullmatch(value) and not _UNSAFE.search(value):
        return None
    bad = unsafe_character(value) or next(
        (_LABEL_VALUE_SEPARATORS[ch] for ch in value if ch in _LABEL_VALUE_SEPARATORS),
        "a Unicode non-character",
    )
    return (
        f"the value holds {bad}: a label is one line of text without quotes, commas, '=' or "
        "backslashes (labels become fleet metadata, written as key=value,key=value)"
    )


class State(str, enum.Enum):
    """Where a node is in its life. The order is the order of a normal boot."""

    DISCOVERED = "discovered"  # seen by ProxyDHCP or TFTP, nothing served over HTTP yet
    BOOTING = "booting"  # its iPXE script was served
    CONFIGURED = "configured"  # its cloud-config was served
    READY = "ready"  # it phoned home
    LOST = "lost"  # its heartbeats stopped for longer than the TTL

    def __str__(self) -> str:
        return self.value


class EventKind(str, enum.Enum):
    """What happened to a node. Each kind is one step of the boot timeline."""

    DHCP = "dhcp"
    TFTP = "tftp"
    IPXE = "ipxe"
    CLOUD_CONFIG = "cloud-config"
    IGNITION = "ignition"
    READY = "ready"
    HEARTBEAT = "heartbeat"
    LOST = "lost"
    OPERATOR = "operator"

    def __str__(self) -> str:
        return self.value


class _EventIds:
    """64 random bits per event id, from a generator seeded by the OS once per process:
    an id must be unique, not secret, and one ``getrandom`` call per boot step (what
    ``secrets`` makes) costs more than the rest of the id. A process started by fork gets
    a new seed (the pid changed), so two processes never share a sequence."""

    def __init__(self) -> None:
        self._pid = -1
        self._rng = random.Random()

    def __call__(self) -> str:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._rng = random.Random(secrets.token_bytes(32))
        return f"{self._rng.getrandbits(64):016x}"


new_event_id = _EventIds()


def new_token() -> str:
    """The per-node secret a node presents when it phones home."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Event:
    """One step in a node's timeline. ``id`` makes applying an event idempotent."""

    kind: EventKind
    at: float
    state: State
    detail: str = ""
    id: str = field(default_factory=new_event_id)
    count: int = 1  # heartbeats coalesce: one event, counted

    def to_dict(self) -> dict[str, Any]:
        """The stored form (the same dict each time: an event never changes, and a node
        record carries up to ``events_kept`` of them through every write). Do not modify."""
        return self._stored

    @functools.cached_property
    def json(self) -> str:
        """``json.dumps(self.to_dict())``, made once (see :meth:`Node.to_json`)."""
        q, n = jsontext.string, jsontext.number
        text = (f'{{"id": {q(self.id)}, "kind": {q(self.kind.value)}, "at": {n(self.at)}, '
                f'"state": {q(self.state.value)}, "detail": {q(self.detail)}')  # fmt: skip
        return text + (f', "count": {n(self.count)}}}' if self.count != 1 else "}")

    @functools.cached_property
    def _stored(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "at": self.at,
            "state": self.state.value,
            "detail": self.detail,
        }
        if self.count != 1:
            d["count"] = self.count
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        return cls(
            kind=EventKind(d["kind"]),
            at=float(d["at"]),
            state=State(d["state"]),
            detail=str(d.get("detail", "")),
            id=str(d["id"]),
            count=int(d.get("count", 1)),
        )


@dataclass(frozen=True)
class Node:
    """A machine pxeserver knows about: one JSON document in the store.

    ``profile`` and ``labels`` are the operator's; they override what the groups decide.
    ``token`` is the node's own secret for ``ready`` and ``heartbeat``; it is never listed
    by the API, only written into the node's own cloud-config.
    ``installed`` names the profile the node phoned home ``ready`` under while that
    profile said ``install: disk`` (at ``installed_at``): its disk holds that OS, and
    network boots of that profile are told to boot from disk. An operator clears it to
    reinstall (``pxeserver nodes set MAC --reinstall``).
    ``config_issued`` is when the one-time secret its config was last served for was
    issued (µs since the epoch, :mod:`pxeserver.fetchsecret`): a secret not newer is refused.
    """

    mac: MAC
    hostname: str = ""
    uuid: str | None = None
    arch: str | None = None
    platform: str | None = None
    ip: str | None = None
    profile: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    state: State = State.DISCOVERED
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_heartbeat: float | None = None
    boot_count: int = 0
    installed: str | None = None
    installed_at: float | None = None
    token: str = field(default_factory=new_token)
    config_issued: int | None = None
    events: tuple[Event, ...] = ()
    recent_ids: tuple[str, ...] = ()  # ids of the events applied lately, for idempotence

    def replace(self, **changes: Any) -> Node:
        """A copy with ``changes``, like ``dataclasses.replace`` (which runs ``__init__``
        and costs ten times as much: every boot step applied copies its node a few times)."""
        unknown = changes.keys() - _NODE_FIELDS
        if unknown:
            raise TypeError(f"Node has no field {sorted(unknown)[0]!r}")
        copy = object.__new__(Node)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    @property
    def never_booted(self) -> bool:
        """Never phoned home, nothing on its disk, and nothing an operator gave it: a
        record anyone who names a MAC could have made (``limits.never_booted`` bounds
        how many are kept)."""
        return (
            self.last_heartbeat is None
            and self.installed is None
            and self.profile is None
            and not self.labels
            and not any(e.kind is EventKind.OPERATOR for e in self.events)
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored form: JSON-ready, readable with plain ``etcdctl get``."""
        return {
            **self.head_dict(),
            "events": [e.to_dict() for e in self.events],
            "recent_ids": list(self.recent_ids),
        }

    def to_json(self) -> tuple[str, str]:
        """``json.dumps(self.to_dict())`` and ``json.dumps(self.head_dict())``, the same
        text, made from each event's JSON kept from the last time (a node is written at
        every boot step, and its timeline of up to ``events_kept`` events barely changes)."""
        head = json.dumps(self.head_dict())
        events = ", ".join([e.json for e in self.events])
        ids = json.dumps(list(self.recent_ids))
        return f'{head[:-1]}, "events": [{events}], "recent_ids": {ids}}}', head

    def head_dict(self) -> dict[str, Any]:
        """The record without its timeline (events and the ids applied lately): what a
        machine is served is made from this part alone (HTTP workers keep it in memory,
        see :mod:`pxeserver.nodes.view`). :meth:`from_dict` reads it back."""
        return {
            "mac": self.mac.value,
            "hostname": self.hostname,
            "uuid": self.uuid,
            "arch": self.arch,
            "platform": self.platform,
            "ip": self.ip,
            "profile": self.profile,
            "labels": dict(self.labels),
            "state": self.state.value,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "last_heartbeat": self.last_heartbeat,
            "boot_count": self.boot_count,
            "installed": self.installed,
            "installed_at": self.installed_at,
            "token": self.token,
            "config_issued": self.config_issued,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Node:
        return cls(
            mac=MAC.parse(d["mac"]),
            hostname=str(d.get("hostname") or ""),
            uuid=d.get("uuid"),
            arch=d.get("arch"),
            platform=d.get("platform"),
            ip=d.get("ip"),
            profile=d.get("profile"),
            labels={str(k): str(v) for k, v in (d.get("labels") or {}).items()},
            state=State(d.get("state", "discovered")),
            first_seen=float(d.get("first_seen") or 0.0),
            last_seen=float(d.get("last_seen") or 0.0),
            last_heartbeat=d.get("last_heartbeat"),
            boot_count=int(d.get("boot_count") or 0),
            installed=d.get("installed") or None,
            installed_at=d.get("installed_at"),
            token=str(d.get("token") or new_token()),
            config_issued=d.get("config_issued"),
            events=tuple(Event.from_dict(e) for e in d.get("events") or ()),
            recent_ids=tuple(str(i) for i in d.get("recent_ids") or ()),
        )


_NODE_FIELDS = frozenset(f.name for f in dataclasses.fields(Node))


@dataclass(frozen=True)
class Versioned:
    """A node as read from the store, with the revision a compare-and-swap must name."""

    node: Node
    revision: int


@dataclass(frozen=True)
class Machine:
    """What a protocol knows about a machine asking to boot. Only ``mac`` is certain."""

    mac: MAC
    uuid: str | None = None
    arch: str | None = None  # iPXE's ${buildarch} (i386, x86_64, arm64) or DHCP option 93
    platform: str | None = None  # iPXE's ${platform}: pcbios, efi
    ip: str | None = None


def now() -> float:
    return time.time()


# iPXE's ${buildarch} and ${platform} values pxeserver knows: what the boot endpoints
# take from firmware and what explain accepts.
KNOWN_ARCHES = frozenset({"i386", "x86_64", "arm32", "arm64", "riscv32", "riscv64", "loong64"})
KNOWN_PLATFORMS = frozenset({"pcbios", "efi"})

# Fields a hostname pattern may use (``cluster.hostname_pattern``).
HOSTNAME_FIELDS = ("index", "mac", "mac_hex", "mac_suffix")
# A single DNS label in lower case: what a hostname pattern or an operator may set.
HOSTNAME_PATTERN = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_HOSTNAME = re.compile(HOSTNAME_PATTERN)


def hostname_from_pattern(pattern: str, index: int, mac: MAC) -> str:
    return pattern.format(index=index, mac=mac.hex, mac_hex=mac.hex, mac_suffix=mac.hex[6:])


def valid_hostname(name: str) -> bool:
    """A single DNS label in lower case (:data:`HOSTNAME_PATTERN`)."""
    return _HOSTNAME.fullmatch(name) is not None


def hostname_problem(name: str) -> str | None:
    """What is wrong with a hostname an operator gives, or None."""
    if valid_hostname(name):
        return None
    return (
        f"hostname {name[:70]!r} is not a valid hostname: use 1-63 lower-case letters, digits "
        "and dashes, not starting or ending with a dash"
    )


# "Not given": ``profile=UNSET`` leaves a node's profile as it is, None clears it.
UNSET: Any = object()
