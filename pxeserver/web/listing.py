"""The node list as people page through it: a text search, one sort order, one page.

``GET /api/v1/nodes`` takes, beside the filters ``state=``, ``profile=`` and
``label=key=value``:

- ``q=TEXT``: nodes whose MAC (with or without colons), hostname or IP contains TEXT, in
  any case;
- ``sort=FIELD`` (one of :data:`SORT_FIELDS`, default ``mac``) and ``order=asc|desc``
  (default ``asc``). Nodes that lack the field (no IP, no profile, no labels, never seen)
  come last in either order; ties keep MAC order, so a page's rows do not swap places
  between two refreshes;
- ``limit=N`` and ``offset=M``: the N nodes after the first M of that order (all of them
  without ``limit``).

The answer's ``count`` is how many nodes match the filters (on every page together) and
``by_state`` how many nodes the registry holds in each state, whatever the filters: what
the node page's summary shows. Paging is by offset, which suits a person's "page 7 of
100"; a script that walks the whole list while machines boot should ask without
``limit`` (one consistent read) rather than page through a list that moves.

Every answer reads the whole registry once (the stores have no index by these fields);
with 10,000 nodes the read is most of an answer's time and a page of 100 rows is a few
tens of kilobytes instead of 4 MB (docs/BENCHMARKS.md, "The node page").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ..model import Node, State

SORT_FIELDS = ("mac", "hostname", "ip", "profile", "labels", "state", "last_seen", "boot_count")
_DIGITS = re.compile(r"([0-9]+)")
_WHOLE = re.compile(r"[0-9]+")
_STATE_ORDER = {s: i for i, s in enumerate(State)}  # the boot's order, not the alphabet's


@dataclass(frozen=True)
class Page:
    """What one listing asks for beyond the service's own filters."""

    text: str = ""
    sort: str = "mac"
    descending: bool = False
    limit: int | None = None
    offset: int = 0


def _whole(args: Mapping[str, str], name: str, least: int) -> int | None:
    raw = args.get(name)
    if raw is None:
        return None
    if not _WHOLE.fullmatch(raw) or int(raw) < least:
        raise InvalidInput(f"{name}={raw[:20]!r}: write a whole number of {least} or more")
    return int(raw)


def page_of(args: Mapping[str, str]) -> Page:
    """The search, order and page a query string asks for; ``InvalidInput`` if it is wrong."""
    sort = args.get("sort", "mac")
    if sort not in SORT_FIELDS:
        known = ", ".join(SORT_FIELDS)
        raise InvalidInput(f"sort={sort[:20]!r} is unknown; sort by one of {known}")
    order = args.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InvalidInput(f"order={order[:20]!r}: write order=asc or order=desc")
    return Page(
        text=args.get("q", "").strip().lower(),
        sort=sort,
        descending=order == "desc",
        limit=_whole(args, "limit", 1),
        offset=_whole(args, "offset", 0) or 0,
    )


def _natural(text: str) -> tuple[Any, ...]:
    """node-9 before node-10: digit runs compare as numbers."""
    parts = _DIGITS.split(text.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _ip_key(ip: str | None) -> tuple[int, int] | None:
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return None
    return address.version, int(address)


def sort_key(field: str, profile_of: Callable[[Node], str | None]) -> Callable[[Node], Any]:
    """The key that orders nodes by ``field``; it gives None for a node without one."""
    keys: dict[str, Callable[[Node], Any]] = {
        "mac": lambda n: n.mac.value,
        "hostname": lambda n: _natural(n.hostname) if n.hostname else None,
        "ip": lambda n: _ip_key(n.ip),
        "profile": lambda n: profile_of(n),
        "labels": lambda n: ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())) or None,
        "state": lambda n: _STATE_ORDER[n.state],
        "last_seen": lambda n: n.last_seen or None,
        "boot_count": lambda n: n.boot_count,
    }
    return keys[field]


def matches_text(node: Node, text: str) -> bool:
    fields = (node.mac.value, node.mac.value.replace(":", ""), node.hostname, node.ip or "")
    return any(text in f.lower() for f in fields)


def arrange(
    nodes: list[Node], page: Page, profile_of: Callable[[Node], str | None]
) -> tuple[list[Node], int]:
    """The nodes of ``page`` in its order, and how many matched on all pages together."""
    found = [n for n in nodes if matches_text(n, page.text)] if page.text else list(nodes)
    key = sort_key(page.sort, profile_of)
    keyed = [(key(n), n) for n in sorted(found, key=lambda n: n.mac.value)]
    present = [(k, n) for k, n in keyed if k is not None]
    present.sort(key=lambda kn: kn[0], reverse=page.descending)  # stable: ties stay in MAC order
    ordered = [n for _, n in present] + [n for k, n in keyed if k is None]
    end = None if page.limit is None else page.offset + page.limit
    return ordered[page.offset : end], len(ordered)


def by_state(nodes: list[Node]) -> dict[str, int]:
    counts = {s.value: 0 for s in State}
    for n in nodes:
        counts[n.state.value] += 1
    return counts
