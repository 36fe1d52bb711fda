"""Many nodes at once, written straight into a store: a fleet of thousands in seconds.

Registering 10,000 machines through HTTP (an iPXE script, a cloud-config and a phone-home
each) takes minutes; the page and the API only read what the store holds, so a test that
is about reading many nodes writes them with :meth:`NodeStore.create` instead. The nodes
look like a real fleet: most ``ready``, some booting, configured, lost or only
discovered, in racks (``rack=r01`` …), with boot timelines whose times fit their state.
Every value is derived from the node's index, so two runs make the same fleet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from pxeserver.model import MAC, Event, EventKind, Node, State
from pxeserver.nodes.change import advance
from pxeserver.store import NodeStore

# Out of every 20 nodes: 14 ready, 2 booting, 1 configured, 2 lost, 1 discovered.
STATES = (
    [State.READY] * 14
    + [State.BOOTING] * 2
    + [State.CONFIGURED]
    + [State.LOST] * 2
    + [State.DISCOVERED]
)
RACKS = 40
# The steps a node has been through to reach each state.
STEPS = {
    State.DISCOVERED: (EventKind.DHCP,),
    State.BOOTING: (EventKind.DHCP, EventKind.TFTP, EventKind.IPXE),
    State.CONFIGURED: (EventKind.DHCP, EventKind.TFTP, EventKind.IPXE, EventKind.CLOUD_CONFIG),
    State.READY: (
        EventKind.DHCP,
        EventKind.TFTP,
        EventKind.IPXE,
        EventKind.CLOUD_CONFIG,
        EventKind.READY,
        EventKind.HEARTBEAT,
    ),
    State.LOST: (
        EventKind.DHCP,
        EventKind.TFTP,
        EventKind.IPXE,
        EventKind.CLOUD_CONFIG,
        EventKind.READY,
        EventKind.LOST,
    ),
}


def mac_of(index: int) -> MAC:
    """The MAC of the fleet's node ``index`` (0-based): 52:54:01:xx:xx:xx."""
    return MAC.parse(
        f"52:54:01:{index >> 16 & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"
    )


def hostname_of(index: int) -> str:
    return f"node-{index + 1:05d}"


def state_of(index: int) -> State:
    return STATES[index % len(STATES)]


def arch_of(index: int) -> str:
    """Every tenth machine is an arm64 one; groups may send those to another profile."""
    return "arm64" if index % 10 == 3 else "x86_64"


def node_of(index: int, now: float) -> Node:
    """Node ``index`` of the fleet, as it would stand at ``now`` (all within the last hour).
    Its profile is the groups' choice (none is assigned); the last of every 20, only
    discovered, has no labels yet."""
    state = state_of(index)
    profile = "flatcar" if arch_of(index) == "arm64" else "coreos"
    # Spread over the last hour, newest first by index, so "last seen" varies. A lost
    # node was last heard from 95 s before it was marked lost.
    last = now - (index * 7 % 3600)
    heard = last - 95 if state is State.LOST else last
    steps = STEPS[state]
    start = heard - 2.0 * (len(steps) - (2 if state is State.LOST else 1))
    events = []
    moved_to = State.DISCOVERED
    for i, kind in enumerate(steps):
        moved_to = advance(moved_to, kind)
        detail = {
            EventKind.IPXE: f"profile {profile}",
            EventKind.CLOUD_CONFIG: f"profile {profile}",
            EventKind.LOST: "silent for 95 s while ready",
        }.get(kind, "")
        count = 1 + index % 30 if kind is EventKind.HEARTBEAT else 1
        at = last if kind is EventKind.LOST else start + 2.0 * i
        events.append(Event(kind, at, moved_to, detail, count=count))
    return Node(
        mac=mac_of(index),
        hostname=hostname_of(index),
        arch=arch_of(index),
        platform="efi" if index % 3 else "pcbios",
        ip=f"10.{index >> 16 & 0xFF}.{index >> 8 & 0xFF}.{index & 0xFF}",
        labels={} if state is State.DISCOVERED else {"rack": f"r{index % RACKS + 1:02d}"},
        state=state,
        first_seen=start,
        last_seen=heard,
        last_heartbeat=heard if state is State.READY else None,
        boot_count=1 + index % 5 if state is not State.DISCOVERED else 0,
        events=tuple(events),
    )


def nodes(count: int, now: float | None = None) -> Iterator[Node]:
    at = time.time() if now is None else now
    return (node_of(i, at) for i in range(count))


def register(store: NodeStore, count: int, now: float | None = None, threads: int = 4) -> None:
    """Write ``count`` fleet nodes into ``store`` (which must not hold them yet)."""

    def create(node: Node) -> None:
        store.create(node, lambda _i, name=node.hostname: name)

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(create, nodes(count, now)):
            pass
