"""The boot policy: the one interface every protocol asks what a machine boots.

HTTP, TFTP and ProxyDHCP never decide on their own and never touch the registry's store:
they call a :class:`BootService`. It matches the machine to a profile (through
:func:`pxeserver.profiles.decide`), records what happened in the registry, and renders
what the machine receives.

In ``serve``'s HTTP workers, known machines are answered from memory and their boot
steps written behind the answer (:mod:`pxeserver.nodes.memory` says how).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import metrics
from .config import Settings
from .errors import InvalidInput, NotFound, RenderError, StoreUnavailable
from .model import (
    MAC,
    UNSET,
    EventKind,
    Machine,
    Node,
    State,
    hostname_from_pattern,
    hostname_problem,
)
from .nodes.memory import WAIT, Memory
from .nodes.registry import Change, Registry
from .nodes.sightings import Sightings
from .profiles import BootChoice, Decision, Profile, Verdict, choose, machine_facts, verdicts
from .render.templates import Renderer

log = logging.getLogger(__name__)


class NoMatch(NotFound):
    """No group selects this machine and there is no default group: ignore it.
    ``verdicts`` says how every group fared, for explaining."""

    def __init__(self, message: str, verdicts: tuple[Verdict, ...] = ()) -> None:
        super().__init__(message)
        self.verdicts = verdicts


@dataclass(frozen=True)
class Preview:
    """What a machine would get, without registering anything (``pxeserver render``)."""

    node: Node
    known: bool  # False: the node is not in the registry; its hostname is a placeholder
    decision: Decision
    ipxe: str
    cloud_config: str | None
    ignition: str | None = None
    boot: BootChoice | None = None  # network boot or boot from disk, and why


@dataclass(frozen=True)
class Explanation:
    """Why a registered machine boots what it boots, from the policy's own decision."""

    node: Node
    reason: str  # the decision's reason, or why no group selects the machine
    verdicts: tuple[Verdict, ...]  # every group's verdict, also when none matched
    preview: Preview | None  # what it would be served; None when nothing selects it


class BootService:
    """The boot policy over a registry, a renderer and the sightings writer; built by
    :func:`pxeserver.daemon.make_service` and nowhere else."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        renderer: Renderer,
        sightings: Sightings,
        memory: Memory | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.renderer = renderer
        # What ProxyDHCP and TFTP saw; written to the registry by a background thread
        # that only the daemon's main process starts (start_background).
        self.sightings = sightings
        # How a node is found and its steps recorded (in the HTTP workers: from memory).
        self.memory = memory or Memory(registry)

    def close(self) -> None:
        """Release the store (and the local cache and journal, if the registry has them)."""
        self.memory.close()
        self.registry.close()

    # -- deciding ----------------------------------------------------------------------------

    def decide(self, node: Node) -> Decision:
        """What ``node`` boots. Raises :class:`NoMatch` if nothing selects it."""
        facts = machine_facts(
            mac=node.mac.value,
            uuid=node.uuid,
            arch=node.arch,
            platform=node.platform,
            hostname=node.hostname,
            labels=node.labels,
        )
        judged = verdicts(self.settings.groups, facts)
        decision = choose(self.settings.groups, judged, node.profile)
        if decision is None:
            raise NoMatch(
                f"{node.mac}: no group selects this machine and there is no default group",
                judged,
            )
        return decision

    def profile(self, decision: Decision, node: Node) -> Profile:
        profile = self.settings.profiles.get(decision.profile)
        if profile is None:
            raise RenderError(
                f"{node.mac} is assigned profile {decision.profile!r}, which is not in "
                f"{self.settings.source}; assign another with `pxeserver nodes set`"
            )
        return profile

    @staticmethod
    def _with_facts(node: Node, machine: Machine) -> Node:
        return node.replace(
            uuid=machine.uuid or node.uuid,
            arch=machine.arch or node.arch,
            platform=machine.platform or node.platform,
            ip=machine.ip or node.ip,
        )

    def _provisional(self, machine: Machine) -> Node:
        """A node not yet in the registry, as it would look; hostname with index 0."""
        hostname = hostname_from_pattern(self.settings.cluster.hostname_pattern, 0, machine.mac)
        return self._with_facts(Node(mac=machine.mac, hostname=hostname), machine)

    # -- what machines ask for ---------------------------------------------------------------

    def chain_script(self, base: str) -> str:
        return self.renderer.chain_script(base)

    def ipxe_script(self, machine: Machine, base: str) -> str:
        """The machine's iPXE script. Serving it records the node as ``booting``."""
        script = self._ipxe_script(machine, base, may_wait=True)
        assert script is not None
        return script

    def ipxe_script_from_memory(self, machine: Machine, base: str) -> str | None:
        """:meth:`ipxe_script` if it can be answered without waiting for the store (a node
        the HTTP worker's view knows), else None: ask :meth:`ipxe_script` (in a thread)."""
        return self._ipxe_script(machine, base, may_wait=False)

    def _ipxe_script(self, machine: Machine, base: str, *, may_wait: bool) -> str | None:
        existing, from_memory = self.memory.known(machine.mac, may_wait)
        if existing is WAIT:
            return None
        before = self._with_facts(existing, machine) if existing else self._provisional(machine)
        key, kept = self.memory.answer("ipxe", before, base) if existing else (None, None)
        if kept is None:
            try:
                decision = self.decide(before)
            except NoMatch:
                change = Change(EventKind.IPXE, "no group matches; nothing served", machine,
                                move=False)  # fmt: skip
                self.memory.record(machine.mac, change, from_memory)
                raise
            profile = self.profile(decision, before)
            # Render before recording: a template error must not leave a node marked booting.
            kept = (self.renderer.ipxe_script(before, profile, decision, base), profile.name,
                    self.renderer.boot_choice(before, profile).from_disk)  # fmt: skip
            self.memory.keep(key, kept)
        script, profile_name, local = kept
        detail = f"profile {profile_name}" + (": told to boot from disk" if local else "")
        # A boot from disk is a boot too: counted, and the node is booting until its
        # installed OS phones home (or boot_timeout marks it lost: the disk did not boot).
        change = Change(EventKind.IPXE, detail, machine, count_boot=True)
        node = self.memory.record(machine.mac, change, from_memory)
        if local:
            metrics.boots_from_disk.labels(profile=profile_name).inc()
        else:
            metrics.boots_started.labels(profile=profile_name).inc()
        if existing is None and node is not None:
            script = self.renderer.ipxe_script(node, profile, decision, base)
        return str(script)

    def cloud_config(self, mac: MAC, base: str, ip: str | None = None) -> str:
        """The node's cloud-config, validated. Serving it makes the node ``configured``.

        ``ip``: the address the request came from. The booted OS fetches its own config,
        so this is the address the OS has, which its config names (fleet's public IP) and
        the registry records from now on. The firmware's lease, recorded at the iPXE
        step, may differ: systemd-networkd asks DHCP with a DUID, not the firmware's MAC.
        """
        text = self._cloud_config(mac, base, ip, may_wait=True)
        assert text is not None
        return text

    def cloud_config_from_memory(self, mac: MAC, base: str, ip: str | None = None) -> str | None:
        """:meth:`cloud_config` without waiting for the store, or None (see
        :meth:`ipxe_script_from_memory`)."""
        return self._cloud_config(mac, base, ip, may_wait=False)

    def _cloud_config(self, mac: MAC, base: str, ip: str | None, *, may_wait: bool) -> str | None:
        existing, from_memory = self.memory.known(mac, may_wait)
        if existing is WAIT:
            return None
        machine = Machine(mac, ip=ip)
        node = self._with_facts(existing, machine) if existing else self._provisional(machine)
        key, kept = self.memory.answer("cloud-config", node, base) if existing else (None, None)
        if kept is not None:
            text, name = kept
            change = Change(EventKind.CLOUD_CONFIG, f"profile {name}", machine)
            self.memory.record(mac, change, from_memory)
            return str(text)
        decision = self.decide(node)
        profile = self.profile(decision, node)
        change = Change(EventKind.CLOUD_CONFIG, f"profile {profile.name}", machine)
        if existing is not None:
            text = self.renderer.cloud_config(node, profile, decision.group, base)
            self.memory.keep(key, (text, profile.name))
            self.memory.record(mac, change, from_memory)
            return text
        # First sight of this MAC: the hostname and token exist once it is recorded.
        self.renderer.cloud_config(node, profile, decision.group, base)
        created = self.memory.record(mac, change, False)
        assert created is not None
        return self.renderer.cloud_config(created, profile, decision.group, base)

    def phone_home(self, mac: MAC, token: str | None, kind: EventKind) -> Node:
        installs, detail = None, ""
        if kind is EventKind.READY:
            # Ready under a profile that installs to disk: the disk holds it now.
            known = self.registry.get(mac)
            name = self.effective_profile(known)[0] if known is not None else None
            installing = self.settings.profiles.get(name or "")
            if known is not None and installing is not None and installing.install == "disk":
                installs = installing.name
                if known.installed == installs:
                    detail = f"profile {installs}, from its disk"
                else:
                    detail = f"profile {installs} installed on disk: later boots start from it"
        node = self.registry.phone_home(mac, token, kind, detail, installs=installs)
        self.memory.wrote(node)
        if kind is EventKind.READY:
            profile = self.effective_profile(node)[0] or "none"
            metrics.boots_completed.labels(profile=profile).inc()
        return node

    def ignition(self, mac: MAC, base: str) -> str:
        """The node's Ignition config, validated. Serving it makes the node ``configured``."""
        existing = self.registry.get(mac)
        node = existing or self._provisional(Machine(mac))
        decision = self.decide(node)
        profile = self.profile(decision, node)
        if not profile.ignition:
            raise NotFound(f"{mac} boots profile {profile.name!r}, which has no Ignition config")
        # As for the cloud-config: render first, so that a broken template records nothing.
        self.renderer.ignition(node, profile, decision.group, base)
        node = self.registry.apply(mac, Change(EventKind.IGNITION, f"profile {profile.name}"))
        return self.renderer.ignition(node, profile, decision.group, base)

    # -- previews (render, check, explain) ---------------------------------------------------

    def preview(self, machine: Machine, base: str, *, use_registry: bool = True) -> Preview:
        existing = None
        if use_registry:
            try:
                existing = self.registry.get(machine.mac)
            except StoreUnavailable as exc:
                log.warning("previewing %s without its record: %s", machine.mac, exc)
        node = self._with_facts(existing, machine) if existing else self._provisional(machine)
        return self._preview(node, existing is not None, self.decide(node), base)

    def explain(self, machine: Machine, base: str) -> Explanation:
        """Why the registered machine ``machine`` boots what it boots (facts it sends now,
        such as its platform, count as in :meth:`ipxe_script`), and what it would be
        served. Records nothing. Raises NotFound for a machine not in the registry."""
        node = self._with_facts(self.node(machine.mac), machine)
        try:
            decision = self.decide(node)
        except NoMatch as exc:
            return Explanation(node, str(exc), exc.verdicts, None)
        preview = self._preview(node, True, decision, base)
        return Explanation(node, decision.reason, decision.verdicts, preview)

    def _preview(self, node: Node, known: bool, decision: Decision, base: str) -> Preview:
        profile = self.profile(decision, node)
        ipxe = self.renderer.ipxe_script(node, profile, decision, base)
        cloud = None
        if profile.cloud_config:
            cloud = self.renderer.cloud_config(node, profile, decision.group, base, preview=True)
        ignition = None
        if profile.ignition:
            ignition = self.renderer.ignition(node, profile, decision.group, base, preview=True)
        boot = self.renderer.boot_choice(node, profile)
        return Preview(node, known, decision, ipxe, cloud, ignition, boot)

    # -- operators ---------------------------------------------------------------------------

    def node(self, mac: MAC) -> Node:
        """The registered node ``mac``; NotFound if there is none."""
        return self.registry.require(mac)

    def health(self) -> str | None:
        """None when the store answers; otherwise what is wrong with it."""
        try:
            self.registry.ping()
        except StoreUnavailable as exc:
            return f"unavailable: {exc}"
        return None

    def effective_profile(self, node: Node) -> tuple[str | None, str]:
        """The profile the node boots now and where that comes from."""
        try:
            decision = self.decide(node)
        except NoMatch:
            return None, "no group matches"
        if decision.group is None:
            return decision.profile, "operator"
        return decision.profile, f"group {decision.group.name}"

    def nodes(
        self,
        *,
        state: State | None = None,
        profile: str | None = None,
        labels: Mapping[str, str] | None = None,
        among: Iterable[Node] | None = None,
    ) -> list[Node]:
        """The nodes (of ``among``, else of the registry) that pass every filter given."""
        found = []
        for node in self.registry.all() if among is None else among:
            if state is not None and node.state is not state:
                continue
            if profile is not None and self.effective_profile(node)[0] != profile:
                continue
            if labels and any(node.labels.get(k) != v for k, v in labels.items()):
                continue
            found.append(node)
        return found

    def set_node(
        self,
        mac: MAC,
        *,
        profile: object = UNSET,
        labels: Mapping[str, str | None] | None = None,
        hostname: str | None = None,
        reinstall: bool = False,
    ) -> Node:
        if profile is not UNSET and profile is not None and profile not in self.settings.profiles:
            known = ", ".join(sorted(self.settings.profiles))
            raise InvalidInput(f"no profile named {profile!r}; the profiles are: {known}")
        if hostname is not None and (problem := hostname_problem(hostname)):
            raise InvalidInput(problem)
        node = self.registry.set(
            mac, profile=profile, labels=labels, hostname=hostname, reinstall=reinstall
        )
        self.memory.wrote(node)  # this worker's next answer has it; the others' soon
        return node

    def forget(self, mac: MAC) -> None:
        self.memory.forgot(mac)
        if not self.registry.forget(mac):
            raise NotFound(f"no node with MAC {mac}")

    # -- the UDP services (ProxyDHCP, TFTP): answers that never wait for the store ----------

    def start_background(self) -> None:
        """Start writing sightings and transfers to the registry (the daemon's main process)."""
        self.sightings.start()

    def stop_background(self, flush: float = 2.0) -> None:
        self.sightings.stop(flush)

    def flush_background(self, timeout: float = 5.0) -> bool:
        """Wait until every queued sighting is written; False if ``timeout`` passed first."""
        return self.sightings.flush(timeout)

    def boot_refusal(self, machine: Machine) -> str | None:
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

    def note_dhcp(self, machine: Machine, detail: str) -> None:
        """Record a ProxyDHCP sighting (state ``discovered``; arch, UUID, IP). Never blocks:
        the in-memory view changes now, the registry when the background writer gets to it;
        repeated sightings of a MAC still queued are merged into one write."""
        self.sightings.seen(machine)
        self.sightings.submit(
            machine.mac, Change(EventKind.DHCP, detail, machine), merge=EventKind.DHCP.value
        )

    def machine_at(self, ip: str) -> Machine | None:
        """The machine last seen by ProxyDHCP with address ``ip`` (TFTP carries no MAC)."""
        return self.sightings.machine_at(ip)

    def note_transfer(self, ip: str, detail: str) -> None:
        """Record a TFTP transfer on the node at ``ip``; never blocks. A client whose IP no
        sighting names cannot be tied to a node: it is logged, not recorded."""
        machine = self.machine_at(ip)
        if machine is None:
            log.debug("TFTP transfer from %s not recorded: no ProxyDHCP sighting names it", ip)
            return
        self.sightings.submit(machine.mac, Change(EventKind.TFTP, detail, Machine(machine.mac)))

    def pxelinux_config(self, machine: Machine, base: str) -> str:
        """The machine's PXELINUX config (``pxelinux.cfg/01-<mac>`` over TFTP): the same
        decision and kernel arguments as its iPXE script. Serving it records the node as
        ``booting`` (an ``ipxe`` event: the boot script was served), like ``/ipxe`` does.
        Reads and writes the store: call it off any packet loop."""
        from .render import pxelinux

        existing = self.registry.get(machine.mac)
        before = self._with_facts(existing, machine) if existing else self._provisional(machine)
        decision = self.decide(before)
        profile = self.profile(decision, before)
        text = pxelinux.render(self.renderer, before, profile, decision, base)
        local = self.renderer.boot_choice(before, profile).from_disk
        detail = f"PXELINUX config over TFTP, profile {profile.name}"
        detail += ": told to boot from disk" if local else ""
        node = self.registry.apply(
            machine.mac, Change(EventKind.IPXE, detail, machine, count_boot=True)
        )
        self.sightings.remember(node)
        if existing is None:
            text = pxelinux.render(self.renderer, node, profile, decision, base)
        return text
