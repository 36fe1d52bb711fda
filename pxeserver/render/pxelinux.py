"""PXELINUX configuration files (``pxelinux.cfg/01-<mac>``), for sites that boot PXELINUX.

The same decision and the same kernel arguments as the machine's iPXE script
(:meth:`pxeserver.render.templates.Renderer.kernel_args`); kernel and initrds are named by
their TFTP path under the virtual ``assets/`` folder (relative, so PXELINUX fetches them from the
server and folder it came from), or by URL when the profile gives a URL (lpxelinux.0
fetches http:// itself).
"""

from __future__ import annotations

from ..model import Node
from ..profiles import Decision, Profile
from .placing import one_line
from .templates import Renderer, template_vars


def _location(path: str) -> str:
    return path if "://" in path else "assets/" + path.lstrip("/")


def render(
    renderer: Renderer,
    node: Node,
    profile: Profile,
    decision: Decision,
    base: str,
    secret: str | None = None,
) -> str:
    header = [
        one_line(f"# pxeserver: {node.mac} ({node.hostname}) boots profile {profile.name!r}"),
        one_line(f"# why: {decision.reason}"),
        "DEFAULT pxeserver",
        "PROMPT 0",
        "TIMEOUT 0",
        "LABEL pxeserver",
    ]
    choice = renderer.boot_choice(node, profile)
    if choice.from_disk:
        return (
            "\n".join([one_line(f"# boot from disk: {choice.why}"), *header, "  LOCALBOOT 0"])
            + "\n"
        )
    urls = renderer.urls(base, secret)  # the boot's one-time config secret
    variables = template_vars(node, profile, decision.group, renderer.settings.cluster, urls)
    args = renderer.kernel_args(node, profile, variables)
    lines = [*header, f"  KERNEL {_location(profile.kernel)}"]
    if profile.initrds:
        lines.append("  INITRD " + ",".join(_location(i) for i in profile.initrds))
    lines.append("  APPEND " + " ".join(args))
    lines.append("  IPAPPEND 2")  # BOOTIF=01-<mac>: the kernel knows which NIC booted
    return "\n".join(lines) + "\n"
