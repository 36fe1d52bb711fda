"""The transfers the TFTP server counts, and its limits on them: at most ``max_per_client``
at once from one address and ``max_transfers`` in all. When all are held, a new request
takes the place of the oldest transfer whose client has not answered anything for a whole
timeout (a stalled or spoofed client), so that stalled clients cannot lock real machines
out. Not thread-safe: the server calls it with its lock held."""

from __future__ import annotations

import time
from dataclasses import dataclass

Peer = tuple[str, int]


@dataclass
class Slot:
    """A transfer the server counts: its loop (-1 while rendering), when it began, whether
    its client has answered, whether the server asked its loop to cancel it."""

    index: int
    started: float
    heard: bool = False
    cancelling: bool = False


class Slots:
    """The server's transfers by client address and port."""

    def __init__(self, max_transfers: int, max_per_client: int, timeout: float) -> None:
        self.max_transfers = max_transfers
        self.max_per_client = max_per_client
        self.timeout = timeout  # a client silent this long may be cancelled to make room
        self._slots: dict[Peer, Slot] = {}
        self._per_ip: dict[str, int] = {}
        self._cancelling = 0  # slots whose loop was asked to cancel them

    def __contains__(self, peer: Peer) -> bool:
        return peer in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, peer: Peer) -> Slot | None:
        return self._slots.get(peer)

    def admit(self, peer: Peer) -> tuple[str | None, tuple[Peer, int] | None]:
        """Count a new transfer for ``peer``. Returns why it is refused
        (None: admitted) and the silent transfer to cancel to make room, if any."""
        if self._per_ip.get(peer[0], 0) >= self.max_per_client:
            return "too many transfers from your address at once, try again", None
        victim = None
        if len(self._slots) - self._cancelling >= self.max_transfers:
            victim = self._silent_victim()
            if victim is None:
                return "server busy, try again", None
        self.add(peer, -1)
        return None, victim

    def _silent_victim(self) -> tuple[Peer, int] | None:
        """The oldest transfer whose client has not answered for a whole timeout, marked as
        being cancelled; None if every transfer's client has answered or is too new."""
        limit = time.monotonic() - self.timeout
        best: Peer | None = None
        best_slot: Slot | None = None
        for peer, slot in self._slots.items():
            if slot.heard or slot.cancelling or slot.index < 0 or slot.started > limit:
                continue
            if best_slot is None or slot.started < best_slot.started:
                best, best_slot = peer, slot
        if best is None or best_slot is None:
            return None
        best_slot.cancelling = True
        self._cancelling += 1
        return best, best_slot.index

    def add(self, peer: Peer, index: int) -> Slot:
        slot = Slot(index, time.monotonic())
        self._slots[peer] = slot
        self._per_ip[peer[0]] = self._per_ip.get(peer[0], 0) + 1
        return slot

    def lost(self, index: int) -> int:
        """Forget the transfers of loop ``index``, whose process died; how many they were."""
        lost = [peer for peer, slot in self._slots.items() if slot.index == index]
        for peer in lost:
            self.drop(peer)
        return len(lost)

    def drop(self, peer: Peer) -> Slot | None:
        slot = self._slots.pop(peer, None)
        if slot is None:
            return None
        if slot.cancelling:
            self._cancelling -= 1
        left = self._per_ip.get(peer[0], 1) - 1
        if left > 0:
            self._per_ip[peer[0]] = left
        else:
            self._per_ip.pop(peer[0], None)
        return slot
