"""The boot policy's answers to the UDP services (ProxyDHCP, TFTP), in the daemon's main
process: decided from memory (the sightings' view) and recorded by a background writer,
so that a packet loop never waits for the store. Only the PXELINUX config, served from a
TFTP transfer's own thread, reads and writes the store."""

from __future__ import annotations

import logging
from typing import Protocol

from ..config import Settings
from ..fetchsecret import FetchSecrets
from ..model import EventKind, Machine, Node
from ..nodes.registry import Change, Registry
from ..nodes.sightings import Sightings
from ..profiles import Decision, Profile
from ..render.templates import Renderer
from ..timeline import moved_note
from .errors import NoMatch

log = logging.getLogger(__name__)


class _Policy(Protocol):
    """What these answers use of the boot service they are part of."""

    settings: Settings
    registry: Registry
    renderer: Renderer
    sightings: Sightings
    fetch: FetchSecrets

    def decide(self, node: Node) -> Decision: ...
    def profile(self, decision: Decision, node: Node) -> Profile: ...
    def _with_facts(self, node: Node, machine: Machine) -> Node: ...
    def _provisional(self, machine: Machine) -> Node: ...
    def machine_at(self, ip: str) -> Machine | None: ...


class UdpAnswers:
    """What ProxyDHCP and TFTP ask of :class:`~pxeserver.boot.service.BootService`."""

    def start_background(self: _Policy) -> None:
        """Start writing sightings and transfers to the registry (the daemon's main process)."""
        self.sightings.start()

    def stop_background(self: _Policy, flush: float = 2.0) -> None:
        self.sightings.stop(flush)

    def flush_background(self: _Policy, timeout: float = 5.0) -> bool:
        """Wait until every queued sighting is written; False if ``timeout`` passed first."""
        return self.sightings.flush(timeout)

    def boot_refusal(self: _Policy, machine: Machine) -> str | None:
        """Why ``machine`` must not be offered a boot loader, or None to offer one.

        Decided without the store, from the settings and the in-memory view: a MAC in
        ``server.exclude_macs`` is refused; otherwise the groups are matched against the
        node as last recorded here (labels, assigned profile) or, for a machine not seen
        before, against the facts its firmware sent. Never raises for the store.
        """
        if machine.mac in self.settings.server.exclude_macs:
            return "excluded by server.exclude_macs"
        known = self.sightings.node(machine.mac)
        node = self._with_facts(known, machine) if known else self._provisional(machine)
        try:
            self.decide(node)
        except NoMatch:
            return "no group selects this machine and there is no default group"
        return None

    def note_dhcp(self: _Policy, machine: Machine, detail: str) -> None:
        """Record a ProxyDHCP sighting (state ``discovered``; arch, UUID, IP). Never blocks:
        the in-memory view changes now, the registry when the background writer gets to it;
        repeated sightings of a MAC still queued are merged into one write."""
        self.sightings.seen(machine)
        self.sightings.submit(
            machine.mac, Change(EventKind.DHCP, detail, machine), merge=EventKind.DHCP.value
        )

    def machine_at(self: _Policy, ip: str) -> Machine | None:
        """The machine last seen by ProxyDHCP with address ``ip`` (TFTP carries no MAC)."""
        return self.sightings.machine_at(ip)

    def note_transfer(self: _Policy, ip: str, detail: str) -> None:
        """Record a TFTP transfer on the node at ``ip``; never blocks. A client whose IP no
        sighting names cannot be tied to a node: it is logged, not recorded."""
        machine = self.machine_at(ip)
        if machine is None:
            log.debug("TFTP transfer from %s not recorded: no ProxyDHCP sighting names it", ip)
            return
        self.sightings.submit(machine.mac, Change(EventKind.TFTP, detail, Machine(machine.mac)))

    def pxelinux_config(self: _Policy, machine: Machine, base: str) -> str:
        """The machine's PXELINUX config (``pxelinux.cfg/01-<mac>`` over TFTP): the same
        decision and kernel arguments as its iPXE script. Serving it records the node as
        ``booting`` (an ``ipxe`` event: the boot script was served), like ``/ipxe`` does.
        Reads and writes the store: call it off any packet loop."""
        from ..render import pxelinux

        existing = self.registry.get(machine.mac)
        before = self._with_facts(existing, machine) if existing else self._provisional(machine)
        decision = self.decide(before)
        profile = self.profile(decision, before)
        secret = self.fetch.issue(machine.mac, machine.ip)
        text = pxelinux.render(self.renderer, before, profile, decision, base, secret)
        local = self.renderer.boot_choice(before, profile).from_disk
        detail = f"PXELINUX config over TFTP, profile {profile.name}"
        detail += ": told to boot from disk" if local else ""
        detail += moved_note(existing, machine.ip)
        node = self.registry.apply(
            machine.mac, Change(EventKind.IPXE, detail, machine, count_boot=True)
        )
        self.sightings.remember(node)
        if existing is None:
            text = pxelinux.render(self.renderer, node, profile, decision, base, secret)
        return text
