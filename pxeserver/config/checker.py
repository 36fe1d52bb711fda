"""Reading a raw settings mapping section by section, collecting every problem found
instead of stopping at the first."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import Problem
from ..logs import redact
from ..model import unsafe_character


class Checker:
    """Reads a raw mapping section by section, collecting problems instead of stopping."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def problem(self, key: str, what: str, fix: str, *, warning: bool = False) -> None:
        # Problems are printed and logged: a URL's user and password never show.
        self.problems.append(Problem(self.source, key, redact(what), fix, warning))

    def section(self, raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(key, f"is a {type(value).__name__}", "write it as a mapping of keys")
            return {}
        return value

    def unknown(self, raw: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
        for key in raw:
            if key not in known:
                path = f"{where}.{key}" if where else str(key)
                self.problem(path, "is not a known setting", f"use one of: {', '.join(known)}")

    def str_(self, raw: Mapping[str, Any], key: str, where: str, default: Any) -> Any:
        value = raw.get(key, default)
        if value is None or isinstance(value, str):
            return value
        self.problem(f"{where}.{key}", f"is {value!r}", "write it as a string")
        return default

    def int_(
        self, raw: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int
    ) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.problem(f"{where}.{key}", f"is {value!r}", f"use a whole number from {lo} to {hi}")
            return default
        return value

    def bool_(self, raw: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.problem(f"{where}.{key}", f"is {value!r}", "write true or false")
            return default
        return value

    def choice(
        self, raw: Mapping[str, Any], key: str, where: str, default: str, options: tuple[str, ...]
    ) -> str:
        value = raw.get(key, default)
        if value not in options:
            self.problem(f"{where}.{key}", f"is {value!r}", f"use one of: {', '.join(options)}")
            return default
        return str(value)

    def str_list(self, raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.problem(f"{where}.{key}", f"is {value!r}", "write a string or a list of strings")
        return None

    def text(self, value: Any, where: str) -> None:
        """Every string in ``value`` (a metadata tree, a list) is one line: no control
        characters or line separators, which would reach templates and scripts."""
        if isinstance(value, str):
            bad = unsafe_character(value)
            if bad:
                self.problem(where, f"holds {bad}", "write it on one line, without it")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                self.text(key, where)
                self.text(item, f"{where}.{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.text(item, f"{where}[{i}]")

    def path(self, raw: Mapping[str, Any], key: str, where: str, base: Path | None) -> Path | None:
        value = self.str_(raw, key, where, None)
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() or base is None else base / p


def url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL with a host"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "has a bad port"
    return None
