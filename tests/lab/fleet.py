"""What the fleet scenario looks at from outside the VMs: fleet itself (the real fleetctl
against the lab's etcd cluster), and a load-test target that logs who calls it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .harness import SERVER_IP, Lab
from .netns import run

TARGET_PORT = 8081


@dataclass(frozen=True)
class FleetMachine:
    id: str
    ip: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class FleetUnit:
    name: str
    active: str
    machine_id: str  # "" while not scheduled
    machine_ip: str


class Fleetctl:
    """The real fleetctl v1.0.0, run inside the lab's namespace, talking to etcd directly."""

    def __init__(self, lab: Lab, binary: Path) -> None:
        self.lab = lab
        self.binary = binary

    def __call__(self, *args: str, timeout: float = 60) -> str:
        endpoints = ",".join(self.lab.etcd_endpoints)
        cmd = [str(self.binary), "--driver=etcd", f"--endpoint={endpoints}", *args]
        return run(self.lab.ns.command(cmd), timeout=timeout)

    def machines(self) -> list[FleetMachine]:
        out = self("list-machines", "--full", "--no-legend", "--fields=machine,ip,metadata")
        found = []
        for line in out.splitlines():
            if not line.strip():
                continue
            machine, ip, metadata = [*line.split("\t"), "", ""][:3]
            pairs = [p.partition("=") for p in metadata.split(",") if "=" in p]
            found.append(FleetMachine(machine.strip(), ip.strip(), {k: v for k, _, v in pairs}))
        return found

    def units(self) -> list[FleetUnit]:
        out = self("list-units", "--full", "--no-legend", "--fields=unit,active,machine")
        found = []
        for line in out.splitlines():
            if not line.strip():
                continue
            name, active, where = [*line.split("\t"), "", ""][:3]
            machine_id, _, ip = where.strip().partition("/")
            if machine_id == "-":
                machine_id = ""
            found.append(FleetUnit(name.strip(), active.strip(), machine_id, ip))
        return found


# http.server's access log: `192.0.2.105 - - [date] "GET /?worker=1&... HTTP/1.1" 200 -`
_ACCESS = re.compile(r'^(?P<ip>\S+) - - \[[^]]*\] "GET (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+)')


class Target:
    """The load-test target: Python's http.server in the lab's namespace. Its access log
    says which address each request came from, and which worker sent it."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.log = lab.dir / "target-access.log"
        root = lab.dir / "target"
        root.mkdir(exist_ok=True)
        (root / "index.html").write_text("load-test target\n")
        cmd = [
            sys.executable, "-m", "http.server", str(TARGET_PORT),
            "--bind", SERVER_IP, "--directory", str(root),
        ]  # fmt: skip
        lab.procs["target"] = lab.ns.popen(cmd, self.log)

    @property
    def url(self) -> str:
        return f"http://{SERVER_IP}:{TARGET_PORT}/"

    def requests(self) -> list[tuple[str, str]]:
        """(client address, path) of every request so far."""
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            m = _ACCESS.match(line)
            if m:
                found.append((m["ip"], m["path"]))
        return found


def nft(lab: Lab, ruleset: str) -> None:
    """Load an nftables ruleset into the lab's namespace (gone with the namespace)."""
    proc = subprocess.run(
        lab.ns.command(["nft", "-f", "-"]), input=ruleset, text=True, capture_output=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"nft -f failed: {proc.stderr.strip()}\n{ruleset}")
