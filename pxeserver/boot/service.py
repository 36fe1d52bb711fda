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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .. import metrics
from ..config import Settings
from ..errors import InvalidInput, NotFound, RenderError, StoreUnavailable
from ..fetchsecret import PREVIEW, SECRET_MARK, ConfigRefused, FetchSecrets
from ..model import (
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
from ..nodes.memory import WAIT, Memory
from ..nodes.registry import Change, Registry
from ..nodes.sightings import Sightings
from ..profiles import (
    BootChoice,
    Decision,
    Group,
    Profile,
    Verdict,
    choose,
    machine_facts,
    verdicts,
)
from ..render.templates import Renderer
from ..timeline import moved_note
from .errors import NoMatch
from .udp import UdpAnswers

log = logging.getLogger(__name__)


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


class BootService(UdpAnswers):
    """The boot policy over a registry, a renderer and the sightings writer; built by
    :func:`pxeserver.daemon.make_service` and nowhere else."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        renderer: Renderer,
        sightings: Sightings,
        fetch: FetchSecrets,
        memory: Memory | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.renderer = renderer
        self.fetch = fetch  # the one-time secrets of config URLs (pxeserver.fetchsecret)
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

    def ipxe_script(self, machine: Machine, base: str, client: str | None = None) -> str:
        """The machine's iPXE script. Serving it records the node as ``booting``.
        ``client``: the address it was asked from, to which the config of this boot goes."""
        script = self._ipxe_script(machine, base, client, may_wait=True)
        assert script is not None
        return script

    def ipxe_script_from_memory(
        self, machine: Machine, base: str, client: str | None = None
    ) -> str | None:
        """:meth:`ipxe_script` if it can be answered without waiting for the store (a node
        the HTTP worker's view knows), else None: ask :meth:`ipxe_script` (in a thread)."""
        return self._ipxe_script(machine, base, client, may_wait=False)

    def _ipxe_script(
        self, machine: Machine, base: str, client: str | None, *, may_wait: bool
    ) -> str | None:
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
            # Kept with a mark where this boot's secret goes (each answer has its own).
            kept = (self.renderer.ipxe_script(before, profile, decision, base, SECRET_MARK),
                    profile.name, self.renderer.boot_choice(before, profile).from_disk)  # fmt: skip
            self.memory.keep(key, kept)
        template, profile_name, local = kept
        secret = self.fetch.issue(machine.mac, client)
        script = str(template).replace(SECRET_MARK, secret)
        detail = f"profile {profile_name}" + (": told to boot from disk" if local else "")
        detail += moved_note(existing, client)
        # A boot from disk is a boot too: counted, and the node is booting until its
        # installed OS phones home (or boot_timeout marks it lost: the disk did not boot).
        change = Change(EventKind.IPXE, detail, machine, count_boot=True)
        node = self.memory.record(machine.mac, change, from_memory)
        if local:
            metrics.boots_from_disk.child(profile_name).inc()
        else:
            metrics.boots_started.child(profile_name).inc()
        if existing is None and node is not None:
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

        text = self._config(EventKind.CLOUD_CONFIG, Machine(mac, ip=ip), base, secret, render,
                            may_wait=True)  # fmt: skip
        assert text is not None
        return text

    def cloud_config_from_memory(
        self, mac: MAC, base: str, ip: str | None = None, secret: str | None = None
    ) -> str | None:
        """:meth:`cloud_config` without waiting for the store, or None (see
        :meth:`ipxe_script_from_memory`)."""

        def render(node: Node, profile: Profile, group: Group | None) -> str:
            return self.renderer.cloud_config(node, profile, group, base)

        return self._config(EventKind.CLOUD_CONFIG, Machine(mac, ip=ip), base, secret, render,
                            may_wait=False)  # fmt: skip

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
            metrics.boots_completed.child(profile).inc()
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

        text = self._config(EventKind.IGNITION, Machine(mac), base, secret, render, ip,
                            may_wait=True)  # fmt: skip
        assert text is not None
        return text

    def _config(
        self,
        kind: EventKind,
        machine: Machine,
        base: str,
        secret: str | None,
        render: Callable[[Node, Profile, Group | None], str],
        ip: str | None = None,
        *,
        may_wait: bool,
    ) -> str | None:
        """A config served once per boot: for a good secret of this machine
        (:mod:`pxeserver.fetchsecret`), never used before in this process or in the node's
        record. Rendered before it is recorded, so that a broken template records nothing.
        None when answering needs the store and ``may_wait`` is False."""
        mac, asked_from = machine.mac, ip or machine.ip
        existing, from_memory = self.memory.known(mac, may_wait)
        if existing is WAIT:
            return None
        try:
            issued = self.fetch.check(mac, secret, asked_from)
            self.fetch.claim(mac, issued, existing.config_issued if existing else None)
        except ConfigRefused as exc:
            raise self._refused(kind, mac, exc, existing, from_memory) from None
        try:
            node = self._with_facts(existing, machine) if existing else self._provisional(machine)
            key, kept = self.memory.answer(kind.value, node, base) if existing else (None, None)
            if kept is None:
                decision = self.decide(node)
                profile = self.profile(decision, node)
                kept = (render(node, profile, decision.group), profile.name)
                self.memory.keep(key, kept)
            text, name = kept
            detail = f"profile {name}" + moved_note(existing, asked_from)
            facts = machine if machine.ip else None
            change = Change(kind, detail, facts, event_id=new_event_id(), config_issued=issued)
            recorded = self.memory.record(mac, change, from_memory)
        except BaseException:
            self.fetch.release(mac, issued)  # not served: the machine may ask again
            raise
        if recorded is None:  # noted, written behind the answer: "once" as docs/SECURITY.md says
            return str(text)
        if change.event_id not in recorded.recent_ids:  # another worker served it first
            raise self._refused(kind, mac, self.fetch.used(mac, issued), recorded, False)
        # First sight of this MAC: the hostname and token exist once it is recorded.
        return str(text) if existing is not None else render(recorded, profile, decision.group)

    def _refused(
        self, kind: EventKind, mac: MAC, exc: ConfigRefused, node: Node | None, noted: bool
    ) -> ConfigRefused:
        """Count and record a refused config fetch (possible spoofing); the 403 follows.
        ``noted``: the node was answered from memory, so is the refusal's event (behind the
        answer, no store call here)."""
        metrics.configs_refused.child(exc.reason.value).inc()
        log.warning("%s: %s refused: %s", mac, kind, exc)
        if node is not None:  # a MAC never booted gets no record from a refusal
            change = Change(kind, f"refused: {exc.short} (possible spoofing)", move=False)
            if noted:
                self.memory.record(mac, change, True)
                return exc
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
        node = self.registry.set(
            mac, profile=profile, labels=labels, hostname=hostname, reinstall=reinstall
        )
        self.memory.wrote(node)  # this worker's next answer has it; the others' soon
        return node

    def forget(self, mac: MAC) -> None:
        self.memory.forgot(mac)
        if not self.registry.forget(mac):
            raise NotFound(f"no node with MAC {mac}")
