"""The ``profiles:`` and ``groups:`` sections: what machines boot and who boots it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput
from ..model import MAC, unsafe_character
from ..profiles import INSTALL_MODES, Group, Profile
from .checker import Checker
from .settings import TRANSPORTS

_PROFILE_KEYS = (
    "kernel",
    "initrd",
    "args",
    "cloud_config",
    "ignition",
    "transport",
    "install",
    "metadata",
)
# The key `install` replaced; still read, with a warning that says what to write.
_OLD_INSTALL_KEY = "boot_from_disk_when_ready"


def _install(c: Checker, body: Mapping[str, Any], where: str) -> str:
    """``install: ram`` (the default: PXE-only, network-boots every time) or ``disk``."""
    install = c.choice(body, "install", where, "ram", INSTALL_MODES)
    if _OLD_INSTALL_KEY in body:
        old = c.bool_(body, _OLD_INSTALL_KEY, where, False)
        c.problem(
            f"{where}.{_OLD_INSTALL_KEY}",
            "is the old name of install",
            f"write install: {'disk' if old else 'ram'} instead",
            warning=True,
        )
        if old and "install" not in body:
            install = "disk"
    return install


def profiles(c: Checker, raw: Mapping[str, Any]) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for name, body in raw.items():
        w = f"profiles.{name}"
        if not isinstance(body, Mapping):
            c.problem(w, "is not a mapping", "give kernel, initrd, args and cloud_config")
            continue
        c.unknown({k: v for k, v in body.items() if k != _OLD_INSTALL_KEY}, _PROFILE_KEYS, w)
        kernel = c.str_(body, "kernel", w, None)
        if not kernel:
            c.problem(f"{w}.kernel", "is missing", "name the kernel file under the assets folder")
            continue
        args = body.get("args", [])
        if isinstance(args, str):
            args = args.split()
        if not isinstance(args, list) or not all(isinstance(a, (str, int)) for a in args):
            c.problem(f"{w}.args", f"is {args!r}", "write a list of kernel arguments")
            args = []
        c.text(body.get("metadata"), f"{w}.metadata")
        profiles[str(name)] = Profile(
            name=str(name),
            kernel=kernel,
            initrds=c.str_list(body, "initrd", w) or (),
            args=tuple(str(a) for a in args),
            cloud_config=c.str_(body, "cloud_config", w, None),
            ignition=c.str_(body, "ignition", w, None),
            transport=c.choice(body, "transport", w, "http", TRANSPORTS),
            install=_install(c, body, w),
            metadata=dict(c.section(body, "metadata")),
        )
    return profiles


def _selector_values(c: Checker, key: str, value: Any, where: str) -> tuple[str, ...] | None:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
        c.problem(where, f"is {value!r}", "write a string or a list of strings")
        return None
    out = []
    for v in values:
        text = str(v)
        bad = unsafe_character(text)
        if bad:
            c.problem(where, f"holds {bad}", "write it on one line, without it")
            return None
        if key == "mac":
            try:
                text = MAC.parse(text).value
            except InvalidInput as exc:
                c.problem(where, str(exc), "fix the MAC address")
                return None
        elif key in ("uuid", "arch", "platform", "hostname"):
            text = text.strip().lower()
        out.append(text)
    return tuple(out)


def groups(c: Checker, raw: Any, profiles: Mapping[str, Profile]) -> tuple[Group, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        c.problem("groups", "is not a list", "write groups as a list of mappings")
        return ()
    groups: list[Group] = []
    seen: dict[str, int] = {}
    default: str | None = None
    for i, body in enumerate(raw):
        w = f"groups[{i}]"
        if not isinstance(body, Mapping):
            c.problem(w, "is not a mapping", "give name, profile and selectors")
            continue
        c.unknown(body, ("name", "profile", "selectors", "metadata"), w)
        name = str(body.get("name") or f"group-{i}")
        w = f"groups[{i}] ({name})"
        if name in seen:
            c.problem(
                w,
                f"has the same name as groups[{seen[name]}]",
                "give every group a name of its own",
            )
        seen[name] = i
        profile = body.get("profile")
        if not isinstance(profile, str) or profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none defined"
            c.problem(
                f"{w}.profile", f"names {profile!r}, which is not a profile", f"use one of: {known}"
            )
            continue
        raw_selectors = c.section(body, "selectors")
        selectors: dict[str, tuple[str, ...]] = {}
        for key, value in raw_selectors.items():
            values = _selector_values(c, str(key), value, f"{w}.selectors.{key}")
            if values is not None:
                selectors[str(key)] = values
        c.text(body.get("metadata"), f"{w}.metadata")
        group = Group(name, profile, selectors, dict(c.section(body, "metadata")))
        if group.is_default:
            if default is not None:
                c.problem(
                    w,
                    f"is a second default group (no selectors), beside {default!r}",
                    "give one of them selectors or remove it",
                )
                continue
            default = name
        groups.append(group)
    return tuple(groups)
