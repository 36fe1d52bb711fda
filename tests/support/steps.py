"""Mixed boot steps for the tests that compare folded writes with writes one by one: every
kind, facts or none, steps written late, event ids seen before, configs for fetch secrets
used before (answered or not), installs, steps that keep the state."""

from __future__ import annotations

import random

from pxeserver.model import MAC, EventKind, Machine
from pxeserver.nodes.change import Change


def mixed_steps(
    rng: random.Random, mac: MAC, count: int, start: float, ids: str = "e"
) -> list[Change]:
    """``count`` steps of ``mac`` from about ``start`` on, in the order they are written;
    their event ids start with ``ids``."""
    steps: list[Change] = []
    seen: list[str] = []
    t, issued = start, 0
    for i in range(count):
        kind = rng.choice(list(EventKind))
        t += rng.choice([0.5, 1.0, 2.0, 200.0])
        at = t - rng.choice([0, 0, 0, 0, 3, 50, 500]) if i else t  # some written late
        event_id = rng.choice(seen) if seen and rng.random() < 0.1 else f"{ids}-{start}-{i}"
        seen.append(event_id)
        facts = None
        if rng.random() < 0.5:
            facts = Machine(mac, uuid=rng.choice([None, "u1", "u2"]),
                            arch=rng.choice([None, "x86_64", "arm64"]),
                            platform=rng.choice([None, "efi", "pcbios"]),
                            ip=rng.choice([None, "192.0.2.1", "192.0.2.2"]))  # fmt: skip
        config = None
        if kind in (EventKind.CLOUD_CONFIG, EventKind.IGNITION) and rng.random() < 0.7:
            issued = issued + rng.choice([0, 1, 5]) if issued else 100  # 0: a secret used again
            config = issued
        steps.append(Change(kind, rng.choice(["", "a", "b"]), facts, at, event_id,
                            move=rng.random() < 0.85, count_boot=rng.random() < 0.3,
                            installs=rng.choice([None, None, "p1", "p2"]),
                            config_issued=config, answered=rng.random() < 0.5))  # fmt: skip
    return steps
