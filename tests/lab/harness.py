"""The lab: real virtual machines PXE-booting through a real pxeserver, on one box.

Layout of one lab (every name ends in the lab's random suffix ``<id>``)::

    namespace pxl-<id>                                  namespace pxls-<id> ("the site")
      bridge br-<id> 192.0.2.1/24 ── veth vs-<id> ════ veth vp-<id> 192.0.2.2/24
        tap<N>-<id> ── QEMU VM N                          dnsmasq: plain DHCP, addresses
      pxeserver: ProxyDHCP 67/4011, TFTP 69, HTTP 80       only, no PXE options; IPv6
                                                           router advertisements
      etcd on 127.0.0.1 (the registry's store), or a
        three-member cluster on the bridge (ETCD_HOSTS)
        that the VMs join and the registry uses too
      the recorder of DHCP/PXE packets (sniff.py)

The site's DHCP server lives in its own namespace because it and pxeserver's ProxyDHCP
both listen on UDP 67, as two hosts on one segment would. The VMs are QEMU in software
emulation only (TCG: /dev/kvm is not usable here). The node image they boot is the lab's
stand-in for CoreOS (tests/lab/build-node-image.sh), or the real images of
tests/lab/build-real-image.sh (the fleet scenario, tests/lab/test_fleet.py).

Everything a lab writes stays in its folder under test-artifacts/lab/ (serial consoles,
pxeserver's, dnsmasq's and etcd's logs, the packet capture) so a failing boot can be read
afterwards; :meth:`Lab.diagnose` names those files.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from pxeserver.commands.ipxe import copy_ipxe
from pxeserver.model import MAC
from tests.support.etcd import EtcdMember

from .netns import Namespace, stop_process
from .vm import OVMF_CODE, QEMU, VM

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "lab"
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
IPXE_DIR = Path("/usr/lib/ipxe")
SERVER_IP = "192.0.2.1"
SITE_IP = "192.0.2.2"
# The site also announces an IPv6 prefix (the documentation one, inside the namespace
# only): iPXE configures IPv6 beside DHCPv4 and, on a segment with no IPv6 router, waits
# about 16 s for router advertisements before it fetches its script. Measured here.
SITE_IP6 = "2001:db8:0:1::2"
RUNS_KEPT = 8
# A lab's etcd cluster: members on the bridge, where the VMs' etcd proxies reach them.
ETCD_HOSTS = ("192.0.2.11", "192.0.2.12", "192.0.2.13")


def missing_tools() -> str | None:
    """What the lab needs from Debian that is not installed, or None."""
    needed = {
        QEMU: "qemu-system-x86",
        "/usr/lib/ipxe/qemu/efi-virtio.rom": "ipxe-qemu",
        str(OVMF_CODE): "ovmf",
        DNSMASQ: "dnsmasq-base",
        "/bin/busybox": "busybox-static",
        str(IPXE_DIR / "snponly.efi"): "ipxe",
    }
    absent = sorted({pkg for path, pkg in needed.items() if not os.path.exists(path)})
    if absent:
        return "the lab needs these Debian packages: " + " ".join(absent)
    return None


def iso_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def seconds_to_ready(vm: VM, node: dict[str, Any]) -> float:
    """From ``vm``'s last power-on to its node's last ``ready`` event."""
    ready = [e for e in node["events"] if e["kind"] == "ready"]
    return round(iso_time(ready[-1]["at"]) - vm.powered_on, 1)


class NsEtcd(EtcdMember):
    """tests/support/etcd.py's member, run inside the lab's namespace on ``host`` (the
    namespace's own loopback for the registry alone; an address on the lab's bridge for
    a cluster the VMs join)."""

    def __init__(
        self, ns: Namespace, data_dir: Path, log_dir: Path, name: str = "lab", host: str = ""
    ) -> None:
        super().__init__(name, data_dir, log_dir)
        self.ns = ns
        self.host = host or "127.0.0.1"
        self.client_port, self.peer_port = 2379, 2380
        self.initial_cluster = f"{self.name}={self.peer_url}"

    def command(self) -> list[str]:
        cmd = super().command()
        # Raft timing for a machine whose two cores also run several emulated VMs: the
        # suite's fast timing (50/500 ms) makes a starved member call elections.
        for flag, value in (("--heartbeat-interval", "200"), ("--election-timeout", "2000")):
            cmd[cmd.index(flag) + 1] = value
        return cmd

    def start(self, wait: bool = True) -> None:
        # Through Namespace.popen: inside the namespace, and gone with the test process.
        self.proc = self.ns.popen(self.command(), self.log_path)
        if wait:
            self.wait_ready()
        self.cluster_state = "existing"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited at start; see {self.log_path}")
            if self.ns.call(_http_ok, self.client_url + "/health"):
                return
            time.sleep(0.2)
        raise TimeoutError(f"etcd in {self.ns.name} not up after {timeout} s; see {self.log_path}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answers
    except OSError:
        return False


def _http(method: str, url: str, body: Any, token: str | None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


class Lab:
    """One namespace with its site DHCP server, etcd, pxeserver and VMs. See the module doc."""

    def __init__(
        self,
        image_dir: Path,
        settings: dict[str, Any],
        label: str = "lab",
        *,
        etcd_members: int = 1,
        assets: dict[str, Path] | None = None,
    ) -> None:
        """``etcd_members``: 1, the registry's own etcd on the namespace's loopback; 3, a
        cluster on the bridge (ETCD_HOSTS) that the VMs join and the registry uses too.
        ``assets``: more files to serve, by their path under the assets folder."""
        self.id = secrets.token_hex(3)
        self.dir = ARTIFACTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}-{self.id}"
        self.image_dir = image_dir
        self.extra_settings = settings
        self.ns = Namespace(f"pxl-{self.id}")
        self.site = Namespace(f"pxls-{self.id}")
        self.bridge = f"br-{self.id}"
        self.vms: list[VM] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.etcd_members = etcd_members
        self.etcds: list[NsEtcd] = []
        self.extra_assets = assets or {}
        self.scratch = Path(f"/tmp/pxlab-{self.id}")  # etcd's data: large, not worth keeping
        self.api_token = secrets.token_hex(8)
        # pxeserver's HTTP port: 80 unless the settings say otherwise (the site-DHCP labs
        # run it on 8080, the port docs/NETBOOT.md's snippets name).
        self.http_port = int(settings.get("server", {}).get("http_port", 80))
        port = "" if self.http_port == 80 else f":{self.http_port}"
        self.http = f"http://{SERVER_IP}{port}"

    # -- paths a failing test names ----------------------------------------------------------

    @property
    def server_log(self) -> Path:
        return self.dir / "pxeserver.log"

    @property
    def dnsmasq_log(self) -> Path:
        return self.dir / "dnsmasq.log"

    @property
    def capture(self) -> Path:
        return self.dir / "dhcp.pcap"

    # -- bring up ----------------------------------------------------------------------------

    def start(self) -> Lab:
        self.dir.mkdir(parents=True)
        self.scratch.mkdir(parents=True)
        _prune_old_runs()
        try:
            self._network()
            self._site_dhcp()
            self._recorder()
            self._etcd()
            self._pxeserver()
        except BaseException:
            self.stop()
            raise
        return self

    def _network(self) -> None:
        self.ns.create()
        self.site.create()
        ns = self.ns
        ns.ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
        ns.ip("addr", "add", f"{SERVER_IP}/24", "dev", self.bridge)
        ns.ip("link", "set", self.bridge, "up")
        veth, peer = f"vs-{self.id}", f"vp-{self.id}"
        ns.ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", self.site.name)
        ns.ip("link", "set", veth, "master", self.bridge, "up")
        self.site.ip("addr", "add", f"{SITE_IP}/24", "dev", peer)
        self.site.ip("-6", "addr", "add", f"{SITE_IP6}/64", "dev", peer, "nodad")
        self.site.ip("link", "set", peer, "up")
        self.site_iface = peer

    def _site_dhcp(self) -> None:
        """dnsmasq as the site's ordinary DHCP server: addresses only, no PXE options."""
        self.procs["dnsmasq"] = self.site.popen(self.site_dnsmasq(), self.dir / "dnsmasq.out")

    def site_dnsmasq(self, *extra: str, addresses: bool = True) -> list[str]:
        """The site's dnsmasq command: IPv6 router advertisements, DHCPv4 addresses unless
        ``addresses`` is false (another DHCP server hands them out), then ``extra``."""
        v4 = ["--dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,10m"] if addresses else []
        return [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",  # no DNS
            f"--interface={self.site_iface}",
            "--bind-interfaces",
            *v4,
            "--enable-ra",  # router advertisements only: no DHCPv6, no PXE over IPv6
            "--dhcp-range=2001:db8:0:1::,ra-only,64,10m",
            f"--dhcp-leasefile={self.dir / 'dnsmasq.leases'}",
            "--dhcp-authoritative",
            "--no-ping",
            "--log-dhcp",
            f"--log-facility={self.dnsmasq_log}",
            "--pid-file=",
            "--user=root",
            *extra,
        ]

    def _recorder(self) -> None:
        cmd = [sys.executable, "-m", "tests.lab.sniff", self.bridge, str(self.capture)]
        self.procs["sniff"] = self.ns.popen(cmd, self.dir / "sniff.log", cwd=REPO)

    def _etcd(self) -> None:
        if self.etcd_members == 1:
            self.etcds = [NsEtcd(self.ns, self.scratch / "etcd", self.dir)]
        else:
            hosts = ETCD_HOSTS[: self.etcd_members]
            self.etcds = [
                NsEtcd(self.ns, self.scratch / f"etcd{i}", self.dir, f"etcd{i}", host)
                for i, host in enumerate(hosts)
            ]
            initial = ",".join(f"{m.name}={m.peer_url}" for m in self.etcds)
            for m in self.etcds:
                self.ns.ip("addr", "add", f"{m.host}/24", "dev", self.bridge)
                m.initial_cluster = initial
        for m in self.etcds:
            m.start(wait=False)
        for m in self.etcds:
            m.wait_ready()

    @property
    def etcd_endpoints(self) -> list[str]:
        return [m.client_url for m in self.etcds]

    def settings(self) -> dict[str, Any]:
        assets = self.dir / "assets"
        (assets / "lab").mkdir(parents=True)
        for name in ("vmlinuz", "initrd.cpio.gz"):
            link_or_copy(self.image_dir / name, assets / "lab" / name)
        for path, source in self.extra_assets.items():
            (assets / path).parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(source, assets / path)
        tftp_root = self.dir / "tftproot"
        copy_ipxe(tftp_root)  # what `pxeserver assets ipxe` does: Debian's iPXE loaders
        base: dict[str, Any] = {
            "server": {
                "listen": "0.0.0.0",
                "http_port": self.http_port,
                "tftp_port": 69,
                "dhcp_port": 67,
                "pxe_port": 4011,
                "base_url": self.http,
                "api_token": self.api_token,
                "http_workers": 2,
                "log_level": "DEBUG",
            },
            "paths": {
                "data_dir": str(self.dir / "var"),
                "assets_dir": str(assets),
                "tftp_root": str(tftp_root),
                "templates_dir": str(REPO / "cloud-configs"),
            },
            # A long deadline: the lab shares two cores with everything else running.
            "store": {
                "backend": "etcd",
                "etcd_endpoints": self.etcd_endpoints,
                "timeout": 10,
            },
            "cluster": {"etcd_endpoints": self.etcd_endpoints},
        }
        return _merge(base, self.extra_settings)

    def _pxeserver(self) -> None:
        config = self.dir / "pxeserver.yaml"
        config.write_text(yaml.safe_dump(self.settings(), sort_keys=False))
        cmd = [sys.executable, "-m", "pxeserver", "serve", "--config", str(config)]
        self.procs["pxeserver"] = self.ns.popen(cmd, self.server_log, cwd=self.dir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.procs["pxeserver"].poll() is not None:
                raise RuntimeError(f"pxeserver exited at start; see {self.server_log}")
            if self.ns.call(_http_ok, f"{self.http}/healthz"):
                return
            time.sleep(0.2)
        raise TimeoutError(f"pxeserver not answering after 60 s; see {self.server_log}")

    # -- machines ----------------------------------------------------------------------------

    def add_vm(self, firmware: str = "bios", mac: MAC | None = None, memory_mb: int = 384) -> VM:
        n = len(self.vms)
        tap = f"tap{n}-{self.id}"
        self.ns.ip("tuntap", "add", "dev", tap, "mode", "tap")
        self.ns.ip("link", "set", tap, "master", self.bridge, "up")
        mac = mac or MAC.from_bytes(bytes([0x52, 0x54, 0x00, int(self.id[:2], 16), 0x10, n]))
        vm = VM(self.ns, self.dir, f"vm{n}-{firmware}", mac, firmware, tap, memory_mb)
        self.vms.append(vm)
        return vm

    # -- the API, from inside the namespace ---------------------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call pxeserver's API from inside the namespace. A 503 (the store did not answer
        in time, as on an overloaded machine) is asked again, as iPXE would, for up to a
        minute; every call the lab makes is idempotent."""
        url = f"{self.http}{path}"
        deadline = time.monotonic() + 60
        while True:
            status, answer = self.ns.call(_http, method, url, body, self.api_token)
            if status != 503 or time.monotonic() > deadline:
                return status, answer
            time.sleep(1)

    def node(self, mac: MAC) -> dict[str, Any] | None:
        """The node as the API shows it, or None if it is not in the registry."""
        status, body = self.api("GET", f"/api/v1/nodes/{mac}")
        if status == 404:
            return None
        assert status == 200, f"GET /api/v1/nodes/{mac}: {status} {body}\n{self.diagnose()}"
        return body

    def wait_for(
        self, vm: VM, states: set[str], timeout: float, *, since_boot: int = 1
    ) -> dict[str, Any]:
        """Poll the registry until ``vm``'s node is in one of ``states`` with at least
        ``since_boot`` boots counted; fail with the paths of every log on timeout."""
        deadline = time.monotonic() + timeout
        node = None
        while time.monotonic() < deadline:
            node = self.node(vm.mac)
            if node and node["state"] in states and node["boot_count"] >= since_boot:
                return node
            failed = vm.step("failed")
            if failed is not None:
                break
            if vm.proc is not None and vm.proc.poll() is not None:
                break
            if self.dead():
                break
            time.sleep(0.5)
        self._fail_wait(vm, states, timeout, node)

    def _fail_wait(
        self, vm: VM, states: set[str], timeout: float, node: dict[str, Any] | None
    ) -> NoReturn:
        state = node["state"] if node else "not in the registry"
        pytest.fail(
            f"{vm.name} ({vm.mac}) did not reach {sorted(states)} within {timeout:.0f} s "
            f"(state: {state})\n" + self.diagnose(vm),
            pytrace=False,
        )

    def wait_all(self, vms: list[VM], states: set[str], timeout: float) -> list[dict[str, Any]]:
        """:meth:`wait_for` for several VMs at once, polled from this thread (no worker
        threads that a SIGTERM would have to wait for)."""
        deadline = time.monotonic() + timeout
        done: dict[int, dict[str, Any]] = {}
        while len(done) < len(vms):
            for i, vm in enumerate(vms):
                if i in done:
                    continue
                node = self.node(vm.mac)
                if node and node["state"] in states:
                    done[i] = node
                    continue
                stuck = vm.step("failed") or not vm.running or self.dead()
                if stuck or time.monotonic() > deadline:
                    self._fail_wait(vm, states, timeout, node)
            time.sleep(0.5)
        return [done[i] for i in range(len(vms))]

    def dead(self) -> list[str]:
        """The lab's own processes that have exited (none should, while it runs)."""
        gone = [
            f"{name} exited ({p.returncode})"
            for name, p in self.procs.items()
            if p.poll() is not None
        ]
        gone += [f"{m.name} exited" for m in self.etcds if not m.running]
        return gone

    def diagnose(self, vm: VM | None = None) -> str:
        """Where to look: the lab's logs, and ``vm``'s (every VM's when none is given)."""
        lines = [f"lab folder: {self.dir}"]
        for what in self.dead():
            lines.append(f"  LAB BROKEN: {what}")
        if vm is None:
            for each in self.vms:
                steps = [s.name for s in each.steps()]
                lines.append(f"  {each.name} ({each.mac}) serial: {each.serial_log} {steps}")
        else:
            lines.append(f"  {vm.name} serial console: {vm.serial_log}")
            lines.append(f"  {vm.name} QEMU output:     {self.dir / (vm.name + '.qemu.log')}")
            running = "running" if vm.running else f"exited {vm.proc and vm.proc.returncode}"
            lines.append(f"  {vm.name} QEMU is {running}")
            steps = [s.name for s in vm.steps()]
            lines.append(f"  {vm.name} console steps: {steps or 'none'}")
            failed = vm.step("failed")
            if failed is not None:
                lines.append(f"  {vm.name} FAILED: {failed.fields.get('reason')}")
        lines.append(f"  pxeserver log: {self.server_log}")
        lines.append(f"  dnsmasq log:   {self.dnsmasq_log}")
        lines.append(f"  DHCP capture:  {self.capture}")
        tail = _tail(self.server_log, 15)
        if tail:
            lines.append("  pxeserver log, last lines:\n" + tail)
        return "\n".join(lines)

    # -- tear down ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process by PID, then delete both namespaces (and so bridge and taps),
        also when stopping a process failed."""
        try:
            self._stop_processes()
        finally:
            self.ns.delete()
            self.site.delete()

    def _stop_processes(self) -> None:
        took = []
        t = time.monotonic()
        for vm in self.vms:
            vm.kill()
        took.append(f"vms {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        # SIGTERM to pxeserver's main process only: it stops its own HTTP and TFTP workers
        # (a SIGTERM to each of them as well left granian waiting ~10 s on one). What is
        # left of its process group after that is killed.
        server = self.procs.pop("pxeserver", None)
        stop_process(server)
        if server is not None:
            _kill_group(server.pid)
        took.append(f"pxeserver {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        for m in self.etcds:
            m.stop()
        took.append(f"etcd {time.monotonic() - t:.1f} s")
        for name in list(self.procs):
            t = time.monotonic()
            stop_process(self.procs.pop(name), group=True)
            took.append(f"{name} {time.monotonic() - t:.1f} s")
        if self.dir.exists():
            (self.dir / "teardown.log").write_text("\n".join(took) + "\n")
        leftover = self.ns.pids() + self.site.pids() if self.ns.created else []
        shutil.rmtree(self.scratch, ignore_errors=True)
        if leftover:
            raise RuntimeError(f"processes left in the lab's namespaces: {leftover}")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "profiles":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _tail(path: Path, n: int) -> str:
    if not path.exists():
        return ""
    lines = path.read_text(errors="replace").splitlines()[-n:]
    return "\n".join("    " + ln for ln in lines)


def _prune_old_runs() -> None:
    runs = sorted(p for p in ARTIFACTS.iterdir() if p.is_dir())
    for old in runs[:-RUNS_KEPT]:
        shutil.rmtree(old, ignore_errors=True)
