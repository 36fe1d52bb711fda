"""The servers of the boot storm, each started inside the server's network namespace.

- :class:`PxeserverStack`: ``pxeserver serve`` on the standard ports (ProxyDHCP 67/4011,
  TFTP 69, HTTP 8080) bound to the namespace's veth, exactly as an operator starts it,
  with the embedded SQLite store or with an etcd (Debian's ``etcd``, started in the same
  namespace on its own loopback, data dir on disk).
- :class:`StaticStack`: the classic C stack — dnsmasq in proxy-DHCP mode (no DNS, no
  addresses), tftpd-hpa's ``in.tftpd`` for TFTP, nginx for HTTP. nginx serves scripts and
  cloud-configs rendered beforehand by pxeserver's own code (:func:`prerender`), so the
  bytes are those pxeserver would serve, and answers the ``ready`` POST with a static 204:
  the static stack records nothing and checks no token.

The namespace is the benchmark's own, so the standard ports are free and nothing leaves
it. Every process runs in a process group of its own (stopped by PID), in the benchmark's
session so that all of them get the same share of a busy machine (autogroup scheduling).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.benchlib import REPO, Veth, stop_process, wait_for

HTTP_PORT = 8080
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
TFTPD = shutil.which("in.tftpd") or "/usr/sbin/in.tftpd"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
CONFIG_URL = re.compile(r"cloud-config-url=(\S+)")
KERNEL = "storm/vmlinuz"
INITRD = "storm/initrd.img"


def make_assets(base: Path, kernel_mb: int, initrd_mb: int) -> dict[str, Any]:
    """The TFTP root (Debian's undionly.kpxe) and the kernel/initrd stand-ins (random bytes)."""
    import hashlib

    loader = Path("/usr/lib/ipxe/undionly.kpxe")
    if not loader.is_file():
        raise FileNotFoundError(f"{loader} is missing: apt-get install ipxe (bench/setup does)")
    tftp_root, assets = base / "tftproot", base / "assets"
    (assets / "storm").mkdir(parents=True)
    tftp_root.mkdir()
    shutil.copyfile(loader, tftp_root / "undionly.kpxe")
    sizes = {KERNEL: kernel_mb * 1024 * 1024, INITRD: initrd_mb * 1024 * 1024}
    for name, size in sizes.items():
        with open(assets / name, "wb") as f:
            for _ in range(size // (1 << 20)):
                f.write(os.urandom(1 << 20))
    # The daemons of the static stack drop to nobody: everything must be world-readable.
    for p in [base, *base.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return {
        "tftp_root": tftp_root,
        "assets": assets,
        "boot_sha256": hashlib.sha256((tftp_root / "undionly.kpxe").read_bytes()).hexdigest(),
        "kernel_size": sizes[KERNEL],
        "initrd_size": sizes[INITRD],
    }


def pxeserver_settings(work: Path, files: dict[str, Any], veth: Veth,
                       etcd: str | None, static_assets: bool) -> dict[str, Any]:  # fmt: skip
    settings: dict[str, Any] = {
        "server": {"interface": veth.server_dev, "http_port": HTTP_PORT},
        "paths": {
            "data_dir": str(work / "data"),
            "assets_dir": str(files["assets"]),
            "tftp_root": str(files["tftp_root"]),
            "templates_dir": str(REPO / "cloud-configs"),
        },
        "cluster": {"etcd_endpoints": [f"http://{veth.SERVER_IP}:2379"]},
        "profiles": {
            "storm": {
                "kernel": KERNEL,
                "initrd": [INITRD],
                "args": ["flatcar.first_boot=1", "console=ttyS0,115200n8"],
                "cloud_config": "flatcar.yaml.j2",
            }
        },
        "groups": [{"name": "default", "profile": "storm"}],
    }
    if static_assets:
        settings["server"]["static_assets"] = True
    if etcd:
        settings["store"] = {"backend": "etcd", "etcd_endpoints": [etcd]}
    return settings


class Stack:
    name = ""

    def __init__(self, veth: Veth, work: Path, files: dict[str, Any]) -> None:
        self.veth = veth
        self.work = work
        self.files = files
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        work.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            self.veth.exec_server(cmd), stdout=log, stderr=subprocess.STDOUT,
            process_group=0, cwd=self.work,
        )  # fmt: skip
        log.close()
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = (self.work / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name}: {name} exited ({proc.returncode}):\n{log}")

    def wait_http(self, path: str) -> None:
        """Wait until HTTP answers ``path`` (asked from inside the namespace with curl)."""

        def up() -> bool:
            self.check_alive()
            out = subprocess.run(
                self.veth.exec_server(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                       f"http://{self.veth.SERVER_IP}:{HTTP_PORT}{path}"]),
                capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip
            return out.stdout.strip() == "200"

        wait_for(up, 60, f"{self.name} to answer {path}", 0.3)

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stop_process(proc)
        self.procs = {}


class PxeserverStack(Stack):
    def __init__(self, veth: Veth, work: Path, files: dict[str, Any], *, etcd: bool,
                 static_assets: bool = False) -> None:  # fmt: skip
        super().__init__(veth, work, files)
        self.etcd = etcd
        self.static_assets = static_assets
        self.name = "pxeserver (etcd)" if etcd else "pxeserver (sqlite)"
        if static_assets:
            self.name += " static assets"
        # bench.resources: fill the registry before the server starts; a longer TTL.
        self.prefill: Callable[[Path], None] | None = None
        self.heartbeat_ttl: int | None = None

    def start(self) -> None:
        etcd_url = None
        if self.etcd:
            etcd_url = "http://127.0.0.1:2379"
            self.spawn("etcd", [
                ETCD, "--name", "storm", "--data-dir", str(self.work / "etcd"),
                "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", "storm=http://127.0.0.1:2380",
            ])  # fmt: skip
        config = self.work / "pxeserver.yaml"
        settings = pxeserver_settings(self.work, self.files, self.veth, etcd_url,
                                      self.static_assets)  # fmt: skip
        if self.heartbeat_ttl:
            settings["cluster"]["heartbeat_ttl"] = self.heartbeat_ttl
        config.write_text(json.dumps(settings, indent=1))
        if self.etcd:
            wait_for(self._etcd_up, 60, "etcd", 0.3)
        if self.prefill:
            self.prefill(config)
        self.spawn("pxeserver", [sys.executable, "-m", "pxeserver", "serve", "--config",
                                 str(config)])  # fmt: skip
        self.wait_http("/boot.ipxe")

    def _etcd_up(self) -> bool:
        self.check_alive()
        out = subprocess.run(
            self.veth.exec_server(["curl", "-s", "http://127.0.0.1:2379/health"]),
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return '"health":"true"' in out.stdout.replace(" ", "")


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {work}/nginx-access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    default_type application/octet-stream;
    client_body_temp_path {work}/nginx-tmp/body;
    proxy_temp_path {work}/nginx-tmp/proxy;
    fastcgi_temp_path {work}/nginx-tmp/fastcgi;
    uwsgi_temp_path {work}/nginx-tmp/uwsgi;
    scgi_temp_path {work}/nginx-tmp/scgi;
    server {{
        listen {address}:{port} backlog=1024;
        root {root};
        location = /boot.ipxe {{ default_type "text/plain; charset=utf-8"; }}
        location = /ipxe {{
            default_type "text/plain; charset=utf-8";
            try_files /ipxe/$arg_mac.ipxe =404;
        }}
        location = /cloud-config {{
            default_type "text/cloud-config; charset=utf-8";
            try_files /cloud-config/$arg_mac.yaml =404;
        }}
        location /assets/ {{ }}
        # pxeserver records the node as ready; the static stack has nothing to record.
        location ~ ^/api/v1/nodes/[^/]+/ready$ {{ return 204; }}
    }}
}}
"""


def prerender(work: Path, files: dict[str, Any], veth: Veth, macs: list[str],
              uuids: list[str], ips: list[str]) -> Path:  # fmt: skip
    """nginx's root: /boot.ipxe and every machine's iPXE script and cloud-config, rendered
    by pxeserver's own :class:`~pxeserver.boot.BootService` (a throwaway SQLite registry)
    for the machines the storm will simulate, with the base URL they will use. Each
    config is asked for as the machine asks for it: from its address, with the one-time
    secret its script names (a config URL without one is refused); nginx ignores the
    secret, and the static stack checks nothing."""
    from urllib.parse import parse_qs, urlsplit

    from pxeserver.config import load
    from pxeserver.daemon import make_service
    from pxeserver.model import MAC, Machine

    root = work / "www"
    (root / "ipxe").mkdir(parents=True)
    (root / "cloud-config").mkdir()
    (root / "assets").symlink_to(files["assets"])
    config = work / "render.yaml"
    config.write_text(json.dumps(pxeserver_settings(work, files, veth, None, False)))
    settings, _ = load(config, {})
    service = make_service(settings)
    base = f"http://{veth.SERVER_IP}:{HTTP_PORT}"
    (root / "boot.ipxe").write_text(service.chain_script(base))
    for mac_text, uuid, ip in zip(macs, uuids, ips):
        mac = MAC.parse(mac_text)
        machine = Machine(mac, uuid, "i386", "pcbios", ip)
        script = service.ipxe_script(machine, base, ip)
        (root / "ipxe" / f"{mac_text}.ipxe").write_text(script)
        url = CONFIG_URL.search(script)
        if url is None:
            raise RuntimeError(f"{mac_text}: no cloud-config-url= in its script:\n{script}")
        secret = parse_qs(urlsplit(url.group(1)).query).get("secret", [None])[0]
        config = service.cloud_config(mac, base, ip, secret)
        (root / "cloud-config" / f"{mac_text}.yaml").write_text(config)
    service.close()
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    return root


class StaticStack(Stack):
    name = "static stack"

    def __init__(self, veth: Veth, work: Path, files: dict[str, Any], root: Path,
                 http_workers: int = 2) -> None:  # fmt: skip
        super().__init__(veth, work, files)
        self.root = root
        self.http_workers = http_workers

    def start(self) -> None:
        ip = self.veth.SERVER_IP
        (self.work / "nginx-tmp").mkdir(exist_ok=True)
        conf = self.work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=self.work, root=self.root, address=ip,
                                          port=HTTP_PORT, workers=self.http_workers))  # fmt: skip
        self.spawn("nginx", [NGINX, "-c", str(conf), "-e", str(self.work / "nginx-error.log")])
        root = str(self.files["tftp_root"])
        self.spawn("tftpd-hpa", [TFTPD, "--listen", "--foreground", "--secure",
                                 "--address", f"{ip}:69", root])  # fmt: skip
        self.spawn("dnsmasq", [
            DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            f"--interface={self.veth.server_dev}", "--bind-interfaces",
            f"--dhcp-range={ip},proxy", f"--dhcp-range={self.veth.MACHINES_GW},proxy",
            f"--pxe-service=x86PC,Network boot,undionly.kpxe,{ip}",
            f"--log-facility={self.work}/dnsmasq-dhcp.log", f"--pid-file={self.work}/dnsmasq.pid",
        ])  # fmt: skip
        self.wait_http("/boot.ipxe")
        time.sleep(0.5)  # dnsmasq and in.tftpd bind at once; no readiness probe for UDP
        self.check_alive()
