"""``pxeserver serve`` on an etcd that speaks only TLS and takes only clients whose
certificate its CA signed: it registers nodes, and rides out that etcd's restart with
its local cache and journal; every TLS mistake is one line naming the file and the fix,
and none of them crashes the server or loses a write.

Certificates are made by openssl (tests/support/certs.py); etcd is Debian's.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..support.certs import Pki
from ..support.cli import run
from ..support.etcd import EtcdMember, wait_answers
from ..support.net import wait_for
from ..support.server import ServerProcess

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

KNOWN = [f"52:54:00:7e:01:{i:02x}" for i in range(5)]
NEW = "52:54:00:7e:02:01"


@pytest.fixture
def member(tmp_path: Path, pki: Pki) -> Iterator[EtcdMember]:
    """A TLS etcd of this test's own: the test stops and starts it."""
    m = EtcdMember("tls-own", tmp_path / "etcd", tmp_path, pki)
    m.start()
    wait_answers(m)
    yield m
    m.stop()


def settings(member: EtcdMember, pki: Pki, **files: str) -> dict[str, Any]:
    """Server settings on ``member``; ``files`` names Pki files instead of the good ones
    (``ca="wrong-ca"``, ``cert="expired"``, ``cert=None`` for no client certificate)."""
    ca, cert = files.get("ca", "ca"), files.get("cert", "client")
    store: dict[str, Any] = {
        "backend": "etcd",
        "etcd_endpoints": [member.client_url],
        "etcd_ca": str(pki.crt(ca)),
        "timeout": 2,
    }
    if cert is not None:
        store.update(etcd_cert=str(pki.crt(cert)), etcd_key=str(pki.key(cert)))
    return {"store": store, "server": {"listen": "127.0.0.1"}}


def server(tmp_path: Path, raw: dict[str, Any]) -> ServerProcess:
    # One data dir for every server of a test: its cache and journal outlive a restart.
    raw = {**raw, "paths": {"data_dir": str(tmp_path / "var")}}
    return ServerProcess(tmp_path / "server", settings=raw, args=["--no-dhcp", "--no-tftp"])


def boot(s: ServerProcess, mac: str) -> tuple[int, int]:
    """A machine's iPXE script and cloud-config: the two statuses."""
    return s.get(f"/ipxe?mac={mac}")[0], s.get(f"/cloud-config?mac={mac}")[0]


def in_etcd(member: EtcdMember, mac: str) -> dict[str, Any]:
    """The node's record as etcd holds it, read with etcd's own client and certificate."""
    out = member.etcdctl("get", f"/pxeserver/nodes/{mac}", "--print-value-only")
    return json.loads(out) if out.strip() else {}


def test_nodes_register_over_tls_and_survive_an_etcd_restart(
    tmp_path: Path, member: EtcdMember, pki: Pki
) -> None:
    s = server(tmp_path, settings(member, pki)).start()
    try:
        assert s.json("/healthz") == {"status": "ok", "store": "ok"}
        for mac in KNOWN:
            assert boot(s, mac) == (200, 200)
        assert {in_etcd(member, mac)["state"] for mac in KNOWN} == {"configured"}

        member.stop()  # etcd down: known machines boot from the cache, writes wait
        status, _, body = s.get("/healthz")
        assert status == 503 and b"unavailable" in body
        for mac in KNOWN:
            assert boot(s, mac) == (200, 200), mac
        status, headers, _ = s.get(f"/ipxe?mac={NEW}")
        assert status == 503 and int(headers["Retry-After"]) > 0

        member.start()  # back, with the same certificates: the journal is replayed
        wait_answers(member)
        wait_for(lambda: all(in_etcd(member, m).get("boot_count") == 2 for m in KNOWN), 60,
                 "the journal to reach etcd", interval=0.5)  # fmt: skip
        assert s.get("/healthz")[0] == 200
        assert boot(s, NEW) == (200, 200)
        kinds = [e["kind"] for e in in_etcd(member, KNOWN[0])["events"]]
        assert kinds == ["ipxe", "cloud-config", "ipxe", "cloud-config"], kinds
        assert s.proc is not None and s.proc.poll() is None
    finally:
        s.stop()
    assert "Traceback" not in s.log()


@pytest.mark.parametrize(
    ("files", "said"),
    [
        (
            {"cert": "expired"},
            "store.etcd_cert: {crt} expired on 2020-02-01 00:00 UTC — renew it (signed by a CA "
            "etcd trusts) and put the new one at {crt}",
        ),
        (
            {"cert": "client", "mode": 0o640},
            "store.etcd_key: {key} is mode 0640: users other than its owner may read or change "
            "the private key — chmod 600 {key}",
        ),
        (
            {"cert": "client", "ca": "missing"},
            "store.etcd_ca: {ca} does not exist — give the path of the CA certificate (PEM) "
            "that signed etcd's server certificates",
        ),
    ],
)
def test_a_tls_file_that_cannot_work_stops_the_start_with_one_line(
    tmp_path: Path, tls_etcd: EtcdMember, pki: Pki, files: dict[str, Any], said: str
) -> None:
    """What the files show at load: the server does not start, one line says why."""
    ca = tmp_path / "ca.crt" if files.get("ca") == "missing" else pki.crt("ca")
    crt, key = pki.crt(files["cert"]), tmp_path / "client.key"
    shutil.copy(pki.key(files["cert"]), key)
    key.chmod(files.get("mode", 0o600))
    raw = settings(tls_etcd, pki)
    raw["store"].update(etcd_ca=str(ca), etcd_cert=str(crt), etcd_key=str(key))
    config = tmp_path / "pxeserver.yaml"
    config.write_text(json.dumps(raw))
    for command in (["serve", "--http-port", "0"], ["check"]):
        r = run(*command, "--config", str(config), cwd=tmp_path)
        assert r.returncode == 1, (command, r.stdout)
        errors = [line for line in r.stderr.splitlines() if ": warning: " not in line]
        assert errors == [f"{config}: " + said.format(crt=crt, key=key, ca=ca)], r.stderr


# What only the handshake shows, with the sentence that says what to fix.
REFUSALS: list[tuple[dict[str, Any], str]] = [
    (
        {"ca": "wrong-ca"},
        "etcd's server certificate does not verify against the CA in {wrong_ca} "
        "(store.etcd_ca: unable to get local issuer certificate): set store.etcd_ca to "
        "the CA that signed etcd's certificate",
    ),
    (
        {"cert": None},
        "etcd closed the TLS connection: it asks for a client certificate "
        "(--client-cert-auth); set store.etcd_cert and store.etcd_key",
    ),
    (
        {"cert": "stranger"},
        "etcd closed the TLS connection: it did not accept the client certificate "
        "{stranger} (store.etcd_cert); give one signed by a CA in etcd's "
        "--trusted-ca-file, for clientAuth, and not expired",
    ),
]


def test_a_handshake_etcd_refuses_is_named_and_loses_nothing(
    tmp_path: Path, member: EtcdMember, pki: Pki
) -> None:
    """A server started with a CA that did not sign etcd's certificate, without the
    client certificate etcd asks for, or with one etcd does not trust: it runs on its
    cache, says what to fix in its log, /healthz, 503s and `pxeserver check`, and
    journals what known machines do; started with the right files, the journal reaches
    etcd."""
    good = server(tmp_path, settings(member, pki)).start()
    try:
        assert boot(good, KNOWN[0]) == (200, 200)
    finally:
        good.stop()
    for files, said in REFUSALS:
        said = said.format(wrong_ca=pki.crt("wrong-ca"), stranger=pki.crt("stranger"))
        wrong = settings(member, pki, **files)
        bad = server(tmp_path, wrong).start()
        try:
            assert boot(bad, KNOWN[0]) == (200, 200)  # from the cache; journalled
            status, _, body = bad.get(f"/ipxe?mac={NEW}")
            assert status == 503 and said in body.decode(), body
            status, _, body = bad.get("/healthz")
            assert status == 503 and said in json.loads(body)["store"], body
            assert bad.proc is not None and bad.proc.poll() is None
        finally:
            bad.stop()
        log = bad.log()
        bad.log_path.unlink()
        started = [line for line in log.splitlines() if "the store refuses pxeserver" in line]
        assert len(started) == 1 and " ERROR " in started[0] and said in started[0], log
        assert "Traceback" not in log
        (tmp_path / "wrong.yaml").write_text(json.dumps(wrong))
        r = run("check", "--config", str(tmp_path / "wrong.yaml"), cwd=tmp_path)
        assert r.returncode == 1 and said in r.stderr, r.stderr
        lines = [line for line in r.stderr.splitlines() if "store.etcd_endpoints" in line]
        assert len(lines) == 1 and "— fix what it names, then check again" in lines[0]

    assert in_etcd(member, KNOWN[0])["boot_count"] == 1
    fixed = server(tmp_path, settings(member, pki)).start()  # nothing was lost
    try:
        wait_for(lambda: in_etcd(member, KNOWN[0]).get("boot_count") == 1 + len(REFUSALS),
                 60, "the journal to reach etcd", interval=0.5)  # fmt: skip
    finally:
        fixed.stop()
