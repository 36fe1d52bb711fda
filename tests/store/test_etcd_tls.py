"""The etcd store over TLS with client certificates, against a real etcd that serves only
TLS and only to clients whose certificate its CA signed (``--client-cert-auth``).

Certificates are made by openssl (tests/support/certs.py). What the settings cannot see
at load (a CA that did not sign etcd's certificate, a client certificate etcd does not
trust, etcd asking for a certificate the client has not got, TLS to a plain etcd) fails
the store's calls with one sentence that names the file to fix.
"""

from __future__ import annotations

import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pxeserver.errors import StoreUnavailable
from pxeserver.model import MAC, Node
from pxeserver.store.etcd import EtcdStore

from ..support.certs import Pki
from ..support.etcd import ETCDCTL, EtcdMember, etcd_prefix
from ..support.net import free_port, port_open, wait_for

pytestmark = pytest.mark.etcd

MAC1 = MAC.parse("52:54:00:7e:00:01")


def store_with(member: EtcdMember, url: str | None = None, **files: Path | None) -> EtcdStore:
    return EtcdStore((url or member.client_url,), etcd_prefix(), timeout=2.0, **files)


def refusal(store: EtcdStore) -> str:
    """The one line the store gives when etcd will not talk to it."""
    try:
        with pytest.raises(StoreUnavailable) as caught:
            store.ping()
    finally:
        store.close()
    line = str(caught.value)
    assert "\n" not in line
    return line


def test_the_store_speaks_tls_with_its_client_certificate(tls_etcd: EtcdMember) -> None:
    store = store_with(tls_etcd, **tls_etcd.tls_files())
    try:
        made = store.create(Node(mac=MAC1), lambda i: f"tls-{i:03d}")
        assert store.get(MAC1) == made
        assert "TLS" in repr(store)
    finally:
        store.close()
    # etcd's own client, with the same certificate, sees the record.
    got = tls_etcd.etcdctl("get", "--prefix", store.prefix + "nodes/", "--print-value-only")
    assert '"hostname": "tls-001"' in got


def test_a_client_without_a_certificate_is_refused(tls_etcd: EtcdMember, pki: Pki) -> None:
    # etcd's own client and an HTTPS client without a certificate: refused by etcd.
    bare = subprocess.run(
        [ETCDCTL, "--endpoints", tls_etcd.client_url, "--cacert", str(pki.crt("ca")),
         "--dial-timeout=2s", "--command-timeout=3s", "get", "x"],
        capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3"},
    )  # fmt: skip
    assert bare.returncode != 0, bare.stdout
    version = tls_etcd.client_url + "/version"
    context = ssl.create_default_context(cafile=str(pki.crt("ca")))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(version, timeout=5, context=context)
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP on its port
        urllib.request.urlopen(version.replace("https", "http"), timeout=5)
    # The positive control: the same request with the client certificate is answered.
    with urllib.request.urlopen(version, timeout=5, context=tls_etcd.ssl_context()) as resp:
        assert b"etcdserver" in resp.read()
    # The store with the CA alone: one line that says what to set.
    line = refusal(store_with(tls_etcd, ca=pki.crt("ca")))
    assert line == (
        f"etcd status: no endpoint answered ({tls_etcd.client_url}: etcd closed the TLS "
        "connection: it asks for a client certificate (--client-cert-auth); set "
        "store.etcd_cert and store.etcd_key)"
    )


def test_a_ca_that_did_not_sign_etcds_certificate_is_named(tls_etcd: EtcdMember, pki: Pki) -> None:
    files = {**tls_etcd.tls_files(), "ca": pki.crt("wrong-ca")}
    line = refusal(store_with(tls_etcd, **files))
    assert (
        f"{tls_etcd.client_url}: etcd's server certificate does not verify against the CA "
        f"in {pki.crt('wrong-ca')} (store.etcd_ca: unable to get local issuer certificate): "
        "set store.etcd_ca to the CA that signed etcd's certificate" in line
    ), line


@pytest.mark.parametrize("client", ["stranger", "expired"])
def test_a_client_certificate_etcd_does_not_accept_is_named(
    tls_etcd: EtcdMember, pki: Pki, client: str
) -> None:
    """A certificate of a CA etcd does not trust, or one that expired while the server
    ran (the settings refuse it at start)."""
    line = refusal(store_with(tls_etcd, ca=pki.crt("ca"), cert=pki.crt(client),
                              key=pki.key(client)))  # fmt: skip
    assert (
        f"{tls_etcd.client_url}: etcd closed the TLS connection: it did not accept the client "
        f"certificate {pki.crt(client)} (store.etcd_cert); give one signed by a CA in etcd's "
        "--trusted-ca-file, for clientAuth, and not expired" in line
    ), line


def test_tls_to_an_etcd_that_serves_plain_http_is_named(etcd: EtcdMember, pki: Pki) -> None:
    url = etcd.client_url.replace("http://", "https://")
    line = refusal(store_with(etcd, url, ca=pki.crt("ca"), cert=pki.crt("client"),
                              key=pki.key("client")))  # fmt: skip
    assert f"{url}: no TLS handshake (" in line and "does etcd serve TLS on this URL?" in line


def test_a_tls_file_gone_since_the_start_is_named(tls_etcd: EtcdMember, tmp_path: Path) -> None:
    files = tls_etcd.tls_files()
    key = tmp_path / "client.key"
    key.write_bytes(files["key"].read_bytes())
    store = store_with(tls_etcd, **{**files, "key": key})
    key.unlink()
    line = refusal(store)
    assert line == f"etcd: cannot read {key}, a TLS file of the settings; restore it"


def test_tls_needs_https_endpoints_and_a_ca_all_or_none(pki: Pki) -> None:
    with pytest.raises(ValueError, match="TLS needs https:// endpoints and a CA"):
        EtcdStore(("http://127.0.0.1:2379",), ca=pki.crt("ca"))
    with pytest.raises(ValueError, match="TLS needs https:// endpoints and a CA"):
        EtcdStore(("https://u:secret@127.0.0.1:2379",))
    try:
        EtcdStore(("https://u:secret@127.0.0.1:2379",))
    except ValueError as exc:
        assert "secret" not in str(exc) and "https://***@127.0.0.1:2379" in str(exc)


def test_the_store_fails_over_between_tls_endpoints(tls_etcd: EtcdMember) -> None:
    """gRPC makes one TLS channel per endpoint; a dead one is passed over like a plain one."""
    dead = f"https://127.0.0.1:{free_port()}"
    store = EtcdStore((dead, tls_etcd.client_url), etcd_prefix(), 2.0, **tls_etcd.tls_files())
    try:
        store.ping()
        assert store.stats["failed_over"] == 1 and store.stats["unreachable"] == 1
        store.ping()  # and stays on the one that answered
        assert store.stats["failed_over"] == 1
    finally:
        store.close()


def test_a_certificate_for_another_host_is_named(tmp_path: Path, pki: Pki) -> None:
    member = EtcdMember("elsewhere", tmp_path / "etcd", tmp_path, pki, server="elsewhere")
    member.start(wait=False)  # its /health would not verify either
    try:
        wait_for(lambda: port_open(member.client_port), 30, "etcd to listen")
        line = refusal(store_with(member, **member.tls_files()))
        assert (
            f"{member.client_url}: etcd's server certificate does not name this URL's host: "
            "write the URL with a name or address its subjectAltName holds" in line
        ), line
    finally:
        member.stop()
