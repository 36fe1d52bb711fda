"""Real etcd servers (Debian's etcd-server) for tests: single members and small clusters.

Each server runs on free loopback ports with a temporary data dir and is stopped by its
PID. ``kill()`` is SIGKILL (a crash), ``stop()`` SIGTERM; ``start()`` again reuses the
data dir, so a member can come back with its data. A member given a :class:`Pki` serves
its clients and peers only over TLS and only to those with a certificate its CA signed
(``--client-cert-auth``, ``--peer-client-cert-auth``). Which member leads comes from etcd's
maintenance Status call (``etcdctl endpoint status``), asked of each running member.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pxeserver.errors import StoreUnavailable
from pxeserver.store import NodeStore
from pxeserver.store.etcd import EtcdStore

from .certs import Pki
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
    def __init__(
        self,
        name: str,
        data_dir: Path,
        log_dir: Path,
        pki: Pki | None = None,
        server: str = "server",
    ) -> None:
        self.name = name
        self.pki = pki
        self.server = server  # the Pki's certificate this member serves with
        self.host = "127.0.0.1"
        self.data_dir = data_dir
        self.log_path = log_dir / f"etcd-{name}.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.initial_cluster = f"{name}={self.peer_url}"
        self.cluster_state = "new"

    @property
    def client_url(self) -> str:
        scheme = "https" if self.pki else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    def tls_files(self) -> dict[str, Path]:
        """The store's TLS arguments for a client this member accepts (none without TLS)."""
        if self.pki is None:
            return {}
        return {"ca": self.pki.crt("ca"), "cert": self.pki.crt("client"),
                "key": self.pki.key("client")}  # fmt: skip

    def store(self, prefix: str = "/pxeserver/", timeout: float = 3.0) -> EtcdStore:
        return EtcdStore((self.client_url,), prefix, timeout, **self.tls_files())

    @property
    def peer_url(self) -> str:
        scheme = "https" if self.pki else "http"
        return f"{scheme}://{self.host}:{self.peer_port}"

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
            *self._tls_flags(),
        ]  # fmt: skip

    def _tls_flags(self) -> list[str]:
        if self.pki is None:
            return []
        # Peers too: a node's etcd proxy asks a member's peer URL for the member list.
        return ["--cert-file", str(self.pki.crt(self.server)),
                "--key-file", str(self.pki.key(self.server)),
                "--trusted-ca-file", str(self.pki.crt("ca")), "--client-cert-auth",
                "--peer-cert-file", str(self.pki.crt(self.server)),
                "--peer-key-file", str(self.pki.key(self.server)),
                "--peer-trusted-ca-file", str(self.pki.crt("ca")),
                "--peer-client-cert-auth"]  # fmt: skip

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
            with urllib.request.urlopen(
                self.client_url + "/health", timeout=1, context=self.ssl_context()
            ) as resp:
                return bool(resp.read())
        except urllib.error.HTTPError:
            return True  # answering, if unhealthy (no leader yet)
        except OSError:
            return False

    def ssl_context(self) -> ssl.SSLContext | None:
        """For HTTPS to this member, with the client certificate it asks for."""
        if self.pki is None:
            return None
        context = ssl.create_default_context(cafile=str(self.pki.crt("ca")))
        context.load_cert_chain(self.pki.crt("client"), self.pki.key("client"))
        return context

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

    def etcdctl(self, *args: str, timeout: float = 30) -> str:
        tls: list[Any] = []
        if self.pki is not None:
            tls = ["--cacert", self.pki.crt("ca"), "--cert", self.pki.crt("client"),
                   "--key", self.pki.key("client")]  # fmt: skip
        out = subprocess.run(
            [ETCDCTL, "--endpoints", self.client_url, *map(str, tls), *args],
            env={**os.environ, "ETCDCTL_API": "3"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return out.stdout

    def status(self) -> dict[str, int] | None:
        """This member's view from the maintenance Status call: its ``member_id``, the
        ``leader`` it follows (0: none), ``raft_term`` and ``revision``; None if it does
        not answer within a second."""
        if not self.running:
            return None
        try:
            out = self.etcdctl(
                "endpoint", "status", "-w", "json", "--command-timeout=1s", timeout=5
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return None
        status = json.loads(out)[0]["Status"]
        return {
            "member_id": int(status["header"]["member_id"]),
            "leader": int(status.get("leader", 0)),
            "raft_term": int(status.get("raft_term", 0)),
            "revision": int(status["header"].get("revision", 0)),
        }

    def is_leader(self) -> bool:
        status = self.status()
        return status is not None and status["member_id"] == status["leader"]


class EtcdCluster:
    """``size`` members on loopback, started together."""

    def __init__(self, size: int, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
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
        """The member that says it leads (and is running); RuntimeError if none does now."""
        for m in self.members:
            if m.is_leader():
                return m
        raise RuntimeError("no running etcd member says it is the leader")

    def wait_leader(self, timeout: float = 30, other_than: EtcdMember | None = None) -> EtcdMember:
        """Wait until a running member (not ``other_than``) leads; return it."""
        found: list[EtcdMember] = []

        def elected() -> bool:
            for m in self.members:
                if m is not other_than and m.is_leader():
                    found.append(m)
                    return True
            return False

        wait_for(elected, timeout, "an etcd leader", interval=0.02)
        return found[0]


_prefixes = itertools.count()


def etcd_prefix() -> str:
    """A key prefix of its own for a test that shares the session's etcd."""
    return f"/pxeserver-test-{next(_prefixes)}/"


def answers(store: NodeStore) -> bool:
    try:
        store.ping()
    except StoreUnavailable:
        return False
    return True


def wait_answers(member: EtcdMember) -> None:
    """etcd's port opens before it serves; wait until it does."""
    store = member.store(timeout=2)
    try:
        wait_for(lambda: answers(store), 30, f"etcd on {member.client_url}", interval=0.1)
    finally:
        store.close()
