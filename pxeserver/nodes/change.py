"""What happens to a node, as the registry applies it: :class:`Change`, and the state rules.

State rules (see :func:`advance`): a DHCP sighting starts a new boot (``discovered``); the
iPXE script makes it ``booting`` and counts the boot; the cloud-config (or Ignition
config) ``configured``; phoning home ``ready``; a heartbeat keeps a node ``ready`` (and
brings a ``lost`` one back). How a change is applied to a record is in
:mod:`pxeserver.nodes.fold`; the registry (:mod:`pxeserver.nodes.registry`) writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import EventKind, Machine, State

# A node remembers the ids of this many events it applied lately: applying one again
# changes nothing.
RECENT_IDS = 64
# Repeats of these within this many seconds bump the last event's count instead of
# growing the timeline (firmware retries DHCP; heartbeats come every few seconds).
COALESCE = {EventKind.DHCP: 120.0, EventKind.HEARTBEAT: float("inf")}

# Events that leave a node's state as it was: a step written late decides the state if
# only these came after it.
STATELESS = frozenset({EventKind.OPERATOR, EventKind.TFTP})


def advance(state: State, kind: EventKind) -> State:
    """The state a node moves to when ``kind`` happens to it in ``state``."""
    if kind is EventKind.DHCP:
        return State.DISCOVERED
    if kind is EventKind.IPXE:
        return State.BOOTING
    if kind in (EventKind.CLOUD_CONFIG, EventKind.IGNITION):
        return State.CONFIGURED
    if kind is EventKind.READY:
        return State.READY
    if kind is EventKind.HEARTBEAT:
        if state in (State.CONFIGURED, State.READY, State.LOST):
            return State.READY
        return state
    if kind is EventKind.LOST:
        return State.LOST
    return state  # TFTP, operator changes


@dataclass(frozen=True)
class Change:
    """One thing that happened to a node, as the registry applies it (or replays it)."""

    kind: EventKind
    detail: str = ""
    facts: Machine | None = None
    at: float | None = None
    event_id: str | None = None
    move: bool = True  # False: record the event but keep the state (e.g. "no profile matched")
    count_boot: bool = False
    # READY under a profile with ``install: disk``: the node's disk now holds this profile
    # (Node.installed); later boots of it are told to boot from disk.
    installs: str | None = None
    # A config served for the fetch secret issued then (µs; pxeserver.fetchsecret): recorded
    # as Node.config_issued, and nothing is recorded if the node has that one or a newer.
    config_issued: int | None = None
    answered: bool = False  # the answer went out before this is written (behind the answer)
