"""The boot policy: the one interface every protocol asks what a machine boots.

HTTP, TFTP and ProxyDHCP never decide on their own and never touch the registry's store:
they call a :class:`BootService`. It matches the machine to a profile (through
:func:`pxeserver.profiles.decide`), records what happened in the registry, and renders
what the machine receives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from . import metrics
from .config import Settings
from .errors import InvalidInput, NotFound, RenderError, StoreUnavailable
from .fetchsecret import PREVIEW, ConfigRefused, FetchSecrets
from .model import (
    MAC,
    UNSET,
    EventKind,
    Machine,
    Node,
    State,
    hostname_from_pattern,
    hostname_problem,
    new_event_id,
)
from .nodes.registry import Change, Registry
from .nodes.sightings import Sightings
from .profiles import (
    BootChoice,
    Decision,
    Group,
    Profile,
    Verdict,
    choose,
    machine_facts,
    verdicts,
)
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
        fetch: FetchSecrets,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.renderer = renderer
        self.fetch = fetch  # the one-time secrets of config URLs (pxeserver.fetchsecret)
        # What ProxyDHCP and TFTP saw; written to the registry by a background thread
        # that only the daemon's main process starts (start_background).
        self.sightings = sightings

    def close(self) -> None:
        """Release the store (and the local cache and journal, if the registry has them)."""
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

    def ipxe_script(self, machine: Machine, base: str, client: str | None = None) -> str:
        """The machine's iPXE script. Serving it records the node as ``booting``.
        ``client``: the address it was asked from, to which the config of this boot goes."""
        existing = self.registry.get(machine.mac)
        before = self._with_facts(existing, machine) if existing else self._provisional(machine)
        try:
            decision = self.decide(before)
        except NoMatch:
            self.registry.apply(
                machine.mac,
                Change(EventKind.IPXE, "no group matches; nothing served", machine, move=False),
            )
            raise
        profile = self.profile(decision, before)
        # Render before recording: a template error must not leave a node marked booting.
        secret = self.fetch.issue(machine.mac, client)
        script = self.renderer.ipxe_script(before, profile, decision, base, secret)
        local = self.renderer.boot_choice(before, profile).from_disk
        detail = f"profile {profile.name}" + (": told to boot from disk" if local else "")
        detail += moved_note(existing, client)
        # A boot from disk is a boot too: counted, and the node is booting until its
        # installed OS phones home (or boot_timeout marks it lost: the disk did not boot).
        node = self.registry.apply(
            machine.mac, Change(EventKind.IPXE, detail, machine, count_boot=True)
        )
        if local:
            metrics.boots_from_disk.labels(profile=profile.name).inc()
        else:
            metrics.boots_started.labels(profile=profile.name).inc()
        if existing is None:
            script = self.renderer.ipxe_script(node, profile, decision, base, secret)
        return script

    def cloud_config(
        self, mac: MAC, base: str, ip: str | None = None, secret: str | None = None
    ) -> str:
        """The node's cloud-config, validated. Serving it makes the node ``configured``.

        ``ip``: the address the request came from. The booted OS fetches its own config,
        so this is the address the OS has, which its config names (fleet's public IP) and
        the registry records from now on. The firmware's lease, recorded at the iPXE
        step, may differ: systemd-networkd asks DHCP with a DUID, not the firmware's MAC.
        ``secret``: the one-time secret of the config URL in the boot's script; without a
        good one the config is refused (:class:`ConfigRefused`, a 403).
        """

        def render(node: Node, profile: Profile, group: Group | None) -> str:
            return self.renderer.cloud_config(node, profile, group, base)

        return self._config(EventKind.CLOUD_CONFIG, Machine(mac, ip=ip), secret, render)

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
        if kind is EventKind.READY:
            profile = self.effective_profile(node)[0] or "none"
            metrics.boots_completed.labels(profile=profile).inc()
        return node

    def ignition(
        self, mac: MAC, base: str, ip: str | None = None, secret: str | None = None
    ) -> str:
        """The node's Ignition config, validated. Serving it makes the node ``configured``.
        ``ip`` and ``secret`` as for :meth:`cloud_config` (``ip`` is checked, not recorded)."""

        def render(node: Node, profile: Profile, group: Group | None) -> str:
            if not profile.ignition:
                raise NotFound(
                    f"{mac} boots profile {profile.name!r}, which has no Ignition config"
                )
            return self.renderer.ignition(node, profile, group, base)

        return self._config(EventKind.IGNITION, Machine(mac), secret, render, ip)

    def _config(
        self,
        kind: EventKind,
        machine: Machine,
        secret: str | None,
        render: Callable[[Node, Profile, Group | None], str],
        ip: str | None = None,
    ) -> str:
        """A config served once per boot: for a good secret of this machine
        (:mod:`pxeserver.fetchsecret`), never used before here or in the node's record.
        Rendered before it is recorded, so that a broken template records nothing."""
        mac, asked_from = machine.mac, ip or machine.ip
        existing = self.registry.get(mac)
        try:
            issued = self.fetch.check(mac, secret, asked_from)
            self.fetch.claim(mac, issued, existing.config_issued if existing else None)
        except ConfigRefused as exc:
            raise self._refused(kind, mac, exc, existing) from None
        try:
            node = self._with_facts(existing, machine) if existing else self._provisional(machine)
            decision = self.decide(node)
            profile = self.profile(decision, node)
            text = render(node, profile, decision.group)
            detail = f"profile {profile.name}" + moved_note(existing, asked_from)
            facts = machine if machine.ip else None
            change = Change(kind, detail, facts, event_id=new_event_id(), config_issued=issued)
            recorded = self.registry.apply(mac, change)
        except BaseException:
            self.fetch.release(mac, issued)  # not served: the machine may ask again
            raise
        if change.event_id not in recorded.recent_ids:  # another worker served it first
            raise self._refused(kind, mac, self.fetch.used(mac, issued), recorded)
        # First sight of this MAC: the hostname and token exist once it is recorded.
        return text if existing is not None else render(recorded, profile, decision.group)

    def _refused(
        self, kind: EventKind, mac: MAC, exc: ConfigRefused, node: Node | None
    ) -> ConfigRefused:
        """Count and record a refused config fetch (possible spoofing); the 403 follows."""
        metrics.configs_refused.labels(reason=exc.reason.value).inc()
        log.warning("%s: %s refused: %s", mac, kind, exc)
        if node is not None:  # a MAC never booted gets no record from a refusal
            change = Change(kind, f"refused: {exc.short} (possible spoofing)", move=False)
            try:
                self.registry.apply(mac, change, create=False)
            except (StoreUnavailable, NotFound) as failed:
                log.warning("%s: the refusal is not in its timeline: %s", mac, failed)
        return exc

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
        # A preview is not the node's boot: its config URL carries a placeholder, and no
        # secret is issued or used.
        ipxe = self.renderer.ipxe_script(node, profile, decision, base, PREVIEW)
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
        return self.registry.set(
            mac, profile=profile, labels=labels, hostname=hostname, reinstall=reinstall
        )

    def forget(self, mac: MAC) -> None:
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
