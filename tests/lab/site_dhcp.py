"""The site's own DHCP server carrying the boot options, as docs/NETBOOT.md tells operators.

Each server runs in the site's namespace with the lab's addresses (192.0.2.100-199 on
192.0.2.0/24) and, appended unchanged, the snippet docs/NETBOOT.md prints for it: the test
reads the code block under the server's heading, so the doc and the test can never drift
apart. The doc names pxeserver as ``192.0.2.1:8080``, which is where these labs run it
(``--no-dhcp``, HTTP on 8080), so nothing in a snippet is replaced.

dnsmasq also sends the site's IPv6 router advertisements for ISC dhcpd and Kea (RA only, no
DHCPv4), as in every lab: without them iPXE waits about 16 s for a router.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import REPO, SITE_IP, Lab
from .vm import VM

NETBOOT = REPO / "docs" / "NETBOOT.md"
DOC_SERVER = "192.0.2.1:8080"  # pxeserver's address and HTTP port in the doc's snippets
POOL = ("192.0.2.100", "192.0.2.199")


@dataclass(frozen=True)
class SiteServer:
    name: str
    heading: str  # the NETBOOT.md heading its snippet is under (the start of the line)
    package: str  # the Debian package that has ``program``
    program: str


SERVERS = {
    s.name: s
    for s in (
        SiteServer("dnsmasq", "### dnsmasq", "dnsmasq-base", "dnsmasq"),
        SiteServer("isc-dhcpd", "### ISC dhcpd", "isc-dhcp-server", "dhcpd"),
        SiteServer("kea", "### Kea", "kea-dhcp4-server", "kea-dhcp4"),
    )
}


def program(server: SiteServer) -> str | None:
    return shutil.which(server.program) or shutil.which(server.program, path="/usr/sbin")


def doc_snippet(heading: str, doc: Path = NETBOOT) -> str:
    """The first fenced code block after the line that starts with ``heading``."""
    lines = doc.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    if len(starts) != 1:
        raise LookupError(f"{doc}: {len(starts)} headings start with {heading!r}; want one")
    fences = [i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith("```")]
    if len(fences) < 2 or any(lines[i].startswith("#") for i in range(starts[0] + 1, fences[0])):
        raise LookupError(f"{doc}: no code block under {heading!r}")
    return "\n".join(lines[fences[0] + 1 : fences[1]]) + "\n"


class SiteDhcpLab(Lab):
    """A lab whose site DHCP server hands out the boot files (pxeserver runs ``--no-dhcp``)."""

    def __init__(self, image_dir: Path, settings: dict[str, Any], server: SiteServer) -> None:
        super().__init__(image_dir, settings, f"site-{server.name}")
        self.server = server
        self.snippet = doc_snippet(server.heading)

    @property
    def server_out(self) -> Path:
        return self.dir / f"{self.server.name}.out"

    def _site_dhcp(self) -> None:
        if self.server.name == "dnsmasq":
            conf = self.dir / "dnsmasq-netboot.conf"
            conf.write_text(self.snippet)
            cmd = self.site_dnsmasq(f"--conf-file={conf}")
            self.procs["dnsmasq"] = self.site.popen(cmd, self.server_out)
            return
        ra_only = self.site_dnsmasq(addresses=False)
        self.procs["dnsmasq"] = self.site.popen(ra_only, self.dir / "dnsmasq.out")
        if self.server.name == "isc-dhcpd":
            self.procs[self.server.name] = self.site.popen(self._dhcpd(), self.server_out)
        else:
            env = {**os.environ, "KEA_PIDFILE_DIR": str(self.dir),
                   "KEA_LOCKFILE_DIR": str(self.dir)}  # fmt: skip
            self.procs[self.server.name] = self.site.popen(self._kea(), self.server_out, env=env)

    def _dhcpd(self) -> list[str]:
        conf = self.dir / "dhcpd.conf"
        subnet = (
            "authoritative;\ndefault-lease-time 600;\nmax-lease-time 600;\n"
            f"subnet 192.0.2.0 netmask 255.255.255.0 {{\n  range {POOL[0]} {POOL[1]};\n}}\n"
        )
        conf.write_text(subnet + "\n# docs/NETBOOT.md, ISC dhcpd, unchanged:\n" + self.snippet)
        leases = self.dir / "dhcpd.leases"
        leases.touch()
        # -f: foreground, -d: log to stderr (the .out file); it serves only that interface.
        return [program(self.server) or self.server.program, "-4", "-f", "-d",
                "-cf", str(conf), "-lf", str(leases), "-pf", str(self.dir / "dhcpd.pid"),
                self.site_iface]  # fmt: skip

    def _kea(self) -> list[str]:
        # The snippet is one member of the Dhcp4 object ("client-classes": [...]).
        dhcp4: dict[str, Any] = json.loads("{" + self.snippet + "}")
        dhcp4.update({
            "interfaces-config": {"interfaces": [self.site_iface]},
            "lease-database": {"type": "memfile", "persist": False},
            "valid-lifetime": 600,
            "subnet4": [{"subnet": "192.0.2.0/24", "pools": [{"pool": " - ".join(POOL)}]}],
            "loggers": [{"name": "kea-dhcp4", "severity": "DEBUG", "debuglevel": 40,
                         "output_options": [{"output": "stdout"}]}],
        })  # fmt: skip
        conf = self.dir / "kea-dhcp4.conf"
        conf.write_text(json.dumps({"Dhcp4": dhcp4}, indent=2) + "\n")
        return [program(self.server) or self.server.program, "-c", str(conf)]

    def diagnose(self, vm: VM | None = None) -> str:
        return super().diagnose(vm) + (
            f"\n  site DHCP server ({self.server.name} at {SITE_IP}): {self.server_out}"
        )
