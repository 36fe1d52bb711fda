"""The exceptions pxeserver raises, in one place.

    PxeError                  base of everything below
    ├── InvalidInput          bad input from a client or operator (HTTP 400)
    ├── NotFound              no such node, profile or file (HTTP 404)
    ├── Forbidden             missing or wrong token (HTTP 401/403)
    ├── Conflict              a compare-and-swap lost a race; re-read and retry
    │   └── HostnameTaken     the hostname belongs to another node (HTTP 409)
    ├── AlreadyExists         a create found the node already there
    ├── StoreUnavailable      the store cannot be reached or timed out (HTTP 503)
    ├── RenderError           a template failed or produced invalid output (HTTP 500)
    └── ConfigError           the settings are invalid; carries every problem found

Library errors (sqlite3, grpc, etcd3, jinja2, yaml) are translated into these at the
boundary where they happen, with ``raise ... from exc``; nothing above the store or the
renderer sees a library exception.
"""

from __future__ import annotations

from dataclasses import dataclass


class PxeError(Exception):
    """Base class of pxeserver's own errors."""


class InvalidInput(PxeError):
    """A client or operator sent something malformed; the message says what was expected."""


class NotFound(PxeError):
    """The node, profile or file asked for does not exist."""


class Forbidden(PxeError):
    """A write needed a token that was missing or wrong."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class Conflict(PxeError):
    """A compare-and-swap update lost a race with another writer."""


class HostnameTaken(Conflict):
    """The hostname is already used by another node."""


class AlreadyExists(PxeError):
    """A node that was to be created is already in the store."""


class StoreUnavailable(PxeError):
    """The store could not be reached within its deadline.

    Never turned into "no match" or "unknown node": the operator must see that the
    store is down.
    """


class RenderError(PxeError):
    """A template could not be rendered, or its output failed validation."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings: where, what, and how to fix it."""

    file: str
    key: str
    what: str
    fix: str
    warning: bool = False

    def __str__(self) -> str:
        prefix = "warning: " if self.warning else ""
        return f"{self.file}: {self.key}: {prefix}{self.what} — {self.fix}"


class ConfigError(PxeError):
    """The settings are invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
