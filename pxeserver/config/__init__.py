"""Settings: one YAML file, validated once at start into a frozen :class:`Settings`.

Only this package reads settings files and the environment. Every problem is collected
(not just the first) and reported as ``FILE: KEY: what is wrong — how to fix``.

Precedence, lowest first: built-in defaults, the settings file, ``PXESERVER_API_TOKEN``
from the environment, command-line flags. Relative paths in the file are relative to
the file's folder; relative paths from flags or defaults are relative to the current
folder, except that the shipped ``cloud-configs/`` and ``tftproot/`` are found next to
the package when the current folder has none.

Here: :func:`load` and :func:`parse`. The dataclasses and their defaults are in
:mod:`.settings`; each section is read and checked by :mod:`.sections` (server, limits,
paths, store, cluster, flatcar; the etcd TLS files of store and cluster by :mod:`.tls`)
or :mod:`.groups` (profiles, groups), through the problem collector of :mod:`.checker`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, Problem
from . import groups, sections
from .checker import Checker
from .settings import (
    DEFAULT_RAW,
    DEFAULTS_SOURCE,
    FLATCAR_FINGERPRINT,
    FLATCAR_KEY,
    ClusterSettings,
    EtcdTls,
    FlatcarSettings,
    LimitSettings,
    PathSettings,
    ServerSettings,
    Settings,
    StoreSettings,
    peer_urls,
)

__all__ = [
    "FLATCAR_FINGERPRINT",
    "FLATCAR_KEY",
    "ClusterSettings",
    "EtcdTls",
    "FlatcarSettings",
    "LimitSettings",
    "PathSettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "load",
    "parse",
    "peer_urls",
    "read_raw",
]


def parse(raw: Mapping[str, Any], source: str, base: Path | None) -> tuple[Settings, list[Problem]]:
    """Validate a raw settings mapping. Returns the settings and every problem found."""
    c = Checker(source)
    c.unknown(
        raw,
        ("server", "paths", "store", "cluster", "profiles", "groups", "flatcar", "limits"),
        "",
    )
    raw_profiles = c.section(raw, "profiles") or DEFAULT_RAW["profiles"]
    found = groups.profiles(c, raw_profiles)
    raw_groups = raw.get("groups", DEFAULT_RAW["groups"] if "profiles" not in raw else None)
    chosen = groups.groups(c, raw_groups, found)
    if not chosen:
        c.problem(
            "groups",
            "no group selects a profile",
            "add a group, e.g. {name: default, profile: X}",
            warning=True,
        )
    settings = Settings(
        server=sections.server(c, c.section(raw, "server")),
        paths=sections.paths(c, c.section(raw, "paths"), base),
        store=sections.store(c, c.section(raw, "store"), base),
        cluster=sections.cluster(c, c.section(raw, "cluster"), base),
        profiles=found,
        groups=chosen,
        source=source,
        flatcar=sections.flatcar(c, c.section(raw, "flatcar"), base),
        limits=sections.limits(c, c.section(raw, "limits")),
    )
    return settings, c.problems


def _merge(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``{"server.http_port": 8081}``-style overrides onto a raw mapping."""
    merged = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            target = merged[section] = {}
        target[key] = value
    return merged


def read_raw(path: Path | None) -> tuple[dict[str, Any], str, Path | None]:
    """The raw mapping of a settings file (or of no file), its name, and its folder."""
    if path is None:
        return {}, DEFAULTS_SOURCE, None
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [Problem(source, "-", f"cannot be read ({exc.strerror})", "check the path")]
        ) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        raise ConfigError(
            [
                Problem(
                    source,
                    where,
                    f"is not valid YAML ({getattr(exc, 'problem', exc)})",
                    "fix the syntax at that line",
                )
            ]
        ) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            [Problem(source, "-", "is not a mapping", "start with server:, profiles: …")]
        )
    return raw, source, path.resolve().parent


def load(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, list[Problem]]:
    """Load and validate settings. Raises :class:`ConfigError` if anything is wrong.

    Returns the settings with the warnings (problems that do not stop the server).
    """
    raw, source, base = read_raw(path)
    env = os.environ if environ is None else environ
    merged = dict(overrides or {})
    token = env.get("PXESERVER_API_TOKEN")
    if token and "server.api_token" not in merged:
        merged["server.api_token"] = token
    settings, problems = parse(_merge(raw, merged), source, base)
    errors = [p for p in problems if not p.warning]
    if errors:
        raise ConfigError(problems)
    return settings, problems
