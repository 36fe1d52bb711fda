"""A node's boot timeline: how long each step took, and one log line per milestone.

A boot goes DHCP → TFTP → iPXE script → cloud-config (or Ignition) → ready, then
heartbeats. The time a step took is the time since the previous step *of the same boot*;
a step that comes back to an earlier point (a DHCP sighting after ``ready``, an iPXE
script served again) starts a new boot and has no duration. Pure functions over
:class:`~pxeserver.model.Event` lists, plus :func:`milestone`, which the registry calls
once per applied change: the log line (with the MAC, and as JSON fields under
``--log-format json``) and the per-step latency histogram.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from . import metrics
from .model import MAC, Event, EventKind, Node, State

# Where each boot step sits in a boot; a step at or before the previous one starts anew.
STEP_ORDER = {
    EventKind.DHCP: 0,
    EventKind.TFTP: 1,
    EventKind.IPXE: 2,
    EventKind.CLOUD_CONFIG: 3,
    EventKind.IGNITION: 3,
    EventKind.READY: 4,
}
# Steps that may repeat within one boot (a loader, then a kernel over TFTP; a node that
# fetches both its cloud-config and its Ignition config).
REPEATABLE = {EventKind.TFTP, EventKind.CLOUD_CONFIG, EventKind.IGNITION}


def step_took(events: Sequence[Event], index: int) -> float | None:
    """Seconds the step ``events[index]`` took, or None if it starts a boot or is no step."""
    event = events[index]
    if event.kind is EventKind.LOST:
        # How long the node was silent before it was declared lost.
        return max(0.0, event.at - events[index - 1].at) if index > 0 else None
    order = STEP_ORDER.get(event.kind)
    if order is None:
        return None
    for earlier in reversed(events[:index]):
        before = STEP_ORDER.get(earlier.kind)
        if before is None:
            if earlier.kind is EventKind.OPERATOR:
                continue  # an operator's change is not part of the boot
            return None  # heartbeats or lost in between: this is another boot
        same_step_again = before == order and event.kind in REPEATABLE
        if before < order or same_step_again:
            return max(0.0, event.at - earlier.at)
        return None
    return None


def durations(events: Sequence[Event]) -> list[float | None]:
    return [step_took(events, i) for i in range(len(events))]


def milestone(log: logging.Logger, node: Node, kind: EventKind, detail: str) -> None:
    """Log one line for a boot milestone and record how long the step took."""
    took = last_step_took(node.events, kind)
    step_milestone(log, node.mac, node.hostname, node.state, kind, detail, took)


def last_step_took(events: Sequence[Event], kind: EventKind) -> float | None:
    """How long the step ``kind`` just added (the timeline's last event) took; None if
    the last event is another kind (the step was counted into an earlier one)."""
    if events and events[-1].kind is kind:
        return step_took(events, len(events) - 1)
    return None


def step_milestone(
    log: logging.Logger,
    mac: MAC,
    hostname: str,
    state: State,
    kind: EventKind,
    detail: str,
    took: float | None,
) -> None:
    """:func:`milestone` of a step that left its node in ``state`` and took ``took``
    (the recorder writes many steps of a node as one record: it notes these per step)."""
    if took is not None and kind in STEP_ORDER:
        metrics.boot_step_seconds.labels(step=kind.value).observe(took)
    if not log.isEnabledFor(logging.INFO):
        return
    text = f"{mac} {hostname or '-'}: {kind} → {state}"
    if detail:
        text += f" ({detail})"
    if took is not None:
        text += f", {took:.1f} s after the previous step"
    fields = {
        "mac": mac.value,
        "hostname": hostname,
        "event": kind.value,
        "state": state.value,
        "took": None if took is None else round(took, 3),
    }
    log.info("%s", text, extra=fields)


def moved_note(node: Node | None, address: str | None) -> str:
    """What a boot GET's event adds when it comes from another address than the one
    recorded for a node past discovery: the facts it carries are recorded all the same
    (machines move), but never without the timeline saying so."""
    if node is None or not node.ip or not address or address == node.ip:
        return ""
    if node.state is State.DISCOVERED:
        return ""
    return (
        f"; asked from {address}, not {node.ip} where it was {node.state}: "
        "a reboot, or another machine naming this MAC"
    )
