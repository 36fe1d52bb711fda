"""Profiles, groups and the one pure function that decides what a machine boots.

A *profile* says what to boot: kernel, initrds, kernel arguments, cloud-config template.
A *group* says who boots it: selectors on the machine's facts (mac, uuid, arch, platform,
hostname, and any operator label). Every selector of a group must match; among the
groups that match, the one with the most selectors wins; a tie goes to the group listed
first in the settings file. A group without selectors is the default (at most one).
An operator's profile assignment on the node beats every group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Where a profile's OS lives once booted: see Profile.install and boot_choice.
INSTALL_MODES = ("ram", "disk")
# Facts every machine can have; any other selector key is a label.
BUILTIN_FACTS = ("mac", "uuid", "arch", "platform", "hostname")


@dataclass(frozen=True)
class Profile:
    """What a machine boots."""

    name: str
    kernel: str
    initrds: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    cloud_config: str | None = None  # template file name under the templates folder
    ignition: str | None = None  # Ignition (spec 3) JSON template, if the OS wants one
    transport: str = "http"  # how iPXE fetches kernel and initrds: "http" or "tftp"
    # Where the OS lives once booted: "ram" (PXE-only: it network-boots every time) or
    # "disk" (it installs itself; once the node phoned home ready under this profile,
    # later network boots are told to boot from the local disk). See boots_from_disk.
    install: str = "ram"
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Group:
    """Who boots a profile: all selectors must match. No selectors: the default group."""

    name: str
    profile: str
    selectors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_default(self) -> bool:
        return not self.selectors


@dataclass(frozen=True)
class Verdict:
    """How one group fared against a machine's facts, for ``explain``."""

    group: str
    matched: bool
    why: str


@dataclass(frozen=True)
class Decision:
    """What a machine boots and why. ``group`` is None when an operator assigned the profile."""

    profile: str
    group: Group | None
    reason: str
    verdicts: tuple[Verdict, ...] = ()


@dataclass(frozen=True)
class BootChoice:
    """Network-boot the profile, or boot from the local disk; and why, for explain."""

    from_disk: bool
    why: str


def boot_choice(profile: Profile, installed: str | None, installed_at: str = "") -> BootChoice:
    """Whether a machine boots ``profile`` from the network or its own disk, and why.

    ``installed`` is the profile the node last phoned home ``ready`` under while that
    profile said ``install: disk`` (the node record's ``installed``). Only that same
    profile counts: a node given another profile boots it (and installs it, if it
    installs to disk), and a profile that runs from RAM network-boots every time. Pure,
    like :func:`decide`.
    """
    name = profile.name
    if profile.install != "disk":
        return BootChoice(False, f"profile {name!r} runs from RAM (install: ram): network boot")
    if installed != name:
        if installed:
            return BootChoice(
                False,
                f"profile {name!r} installs to disk; the disk holds {installed!r}, not it: "
                "network boot to install it",
            )
        return BootChoice(
            False, f"profile {name!r} installs to disk and is not installed yet: network boot"
        )
    when = f" ({installed_at})" if installed_at else ""
    return BootChoice(
        True,
        f"profile {name!r} installs to disk and this node phoned home ready under it{when}: "
        "boot from disk (pxeserver nodes set MAC --reinstall installs it again)",
    )


def normalise_fact(key: str, value: str) -> str:
    """The form in which facts and selector values are compared."""
    if key in ("uuid", "arch", "platform", "hostname"):
        return value.strip().lower()
    return value


def machine_facts(
    *,
    mac: str,
    uuid: str | None,
    arch: str | None,
    platform: str | None,
    hostname: str | None,
    labels: Mapping[str, str],
) -> dict[str, str]:
    """The facts selectors are matched against. Built-in facts beat labels of the same name."""
    facts = {k: str(v) for k, v in labels.items()}
    for key, value in (
        ("mac", mac),
        ("uuid", uuid),
        ("arch", arch),
        ("platform", platform),
        ("hostname", hostname),
    ):
        if value:
            facts[key] = normalise_fact(key, value)
        else:
            facts.pop(key, None)
    return facts


def _judge(group: Group, facts: Mapping[str, str]) -> Verdict:
    missing = []
    for key, wanted in sorted(group.selectors.items()):
        have = facts.get(key)
        if have is None or have not in wanted:
            shown = wanted[0] if len(wanted) == 1 else "one of " + ", ".join(wanted)
            missing.append(f"{key} is {have!r}, wants {shown}")
    if missing:
        return Verdict(group.name, False, "; ".join(missing))
    if group.is_default:
        return Verdict(group.name, True, "default group (no selectors)")
    keys = ", ".join(f"{k}={facts[k]}" for k in sorted(group.selectors))
    return Verdict(group.name, True, f"all {len(group.selectors)} selectors match ({keys})")


def decide(
    groups: Sequence[Group],
    facts: Mapping[str, str],
    assigned_profile: str | None = None,
) -> Decision | None:
    """Decide what a machine boots. None means no group matches and there is no default.

    Pure: no I/O, no clock. ``groups`` are in settings-file order, which breaks ties.
    """
    return choose(groups, verdicts(groups, facts), assigned_profile)


def choose(
    groups: Sequence[Group], judged: Sequence[Verdict], assigned_profile: str | None = None
) -> Decision | None:
    """:func:`decide` on verdicts already judged, one per group in the same order."""
    verdicts = tuple(judged)
    if assigned_profile:
        return Decision(assigned_profile, None, "profile assigned by an operator", verdicts)
    best: tuple[Group, Verdict] | None = None
    for group, verdict in zip(groups, verdicts):
        if verdict.matched and (best is None or len(group.selectors) > len(best[0].selectors)):
            best = (group, verdict)
    if best is None:
        return None
    group, verdict = best
    tied = [
        g.name
        for g, v in zip(groups, verdicts)
        if v.matched and g is not group and len(g.selectors) == len(group.selectors)
    ]
    reason = f"group {group.name!r}: {verdict.why}"
    if tied:
        reason += f" (tied with {', '.join(tied)}; the first in the settings file wins)"
    return Decision(group.profile, group, reason, verdicts)


def verdicts(groups: Sequence[Group], facts: Mapping[str, str]) -> tuple[Verdict, ...]:
    """Every group's verdict on a machine: for explaining, also when no group matches."""
    return tuple(_judge(g, facts) for g in groups)
