"""Real etcd servers (Debian's etcd-server) for tests: single members and small clusters.

Each server runs on free loopback ports with a temporary data dir and is stopped by its
PID. ``kill()`` is SIGKILL (a crash), ``stop()`` SIGTERM; ``start()`` again reuses the
data dir, so a member can come back with its data.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from .net import free_port, port_open, wait_for

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def require_etcd() -> None:
    if not os.access(ETCD, os.X_OK):
        raise RuntimeError(
            "etcd is not installed: the tests need Debian's etcd-server (the README's test "
            "command installs it)"
        )


class EtcdMember:
    def __init__(self, name: str, data_dir: Path, log_dir: Path) -> None:
        self.name = name
        self.data_dir = data_dir
        self.log_path = log_dir / f"etcd-{name}.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.initial_cluster = f"{name}={self.peer_url}"
        self.cluster_state = "new"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def command(self) -> list[str]:
        return [
            ETCD,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", self.cluster_state,
            "--initial-cluster-token", "pxeserver-tests",
            "--enable-v2",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
        ]  # fmt: skip

    def start(self, wait: bool = True) -> None:
        require_etcd()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        if wait:
            self.wait_ready()
        self.cluster_state = "existing"

    def wait_ready(self, timeout: float = 30) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd {self.name} exited; see {self.log_path}")
            return port_open(self.client_port) and self._serving()

        wait_for(up, timeout, f"etcd {self.name} on {self.client_url}")

    def _serving(self) -> bool:
        """The client port opens before etcd serves (a loaded machine shows the gap): a
        member is ready once its /health answers at all. A member of a cluster without a
        quorum answers too (``"health":"false"``), so a cluster can start one by one."""
        try:
            with urllib.request.urlopen(self.client_url + "/health", timeout=1) as resp:
                return bool(resp.read())
        except urllib.error.HTTPError:
            return True  # answering, if unhealthy (no leader yet)
        except OSError:
            return False

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=15)
        self.proc = None

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def etcdctl(self, *args: str) -> str:
        out = subprocess.run(
            [ETCDCTL, "--endpoints", self.client_url, *args],
            env={**os.environ, "ETCDCTL_API": "3"},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout


class EtcdCluster:
    """``size`` members on loopback, started together."""

    def __init__(self, size: int, base: Path) -> None:
        self.members = [EtcdMember(f"m{i}", base / f"m{i}", base) for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self) -> None:
        for m in self.members:
            m.start(wait=False)
        for m in self.members:
            m.wait_ready()

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def leader(self) -> EtcdMember:
        import json

        for m in self.members:
            if not m.running:
                continue
            status = json.loads(m.etcdctl("endpoint", "status", "-w", "json"))
            header = status[0]["Status"]
            if header["header"]["member_id"] == header["leader"]:
                return m
        raise RuntimeError("no leader")
