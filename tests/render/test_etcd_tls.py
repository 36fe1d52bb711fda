"""The nodes' side of etcd over TLS: what the configs carry, and a real etcd proxy
running what the Flatcar config says.

The shipped templates (both cloud-configs and the Ignition config) write the cluster's CA
and, when one is set, the client certificate and key (mode 0600) under
/etc/pxeserver/etcd/, and give the node's etcd proxy their paths as its peer-* files; a
cluster without TLS gets neither.

The Flatcar cloud-config is rendered for a cluster whose etcd takes only TLS clients
with a certificate (cluster.etcd_ca, etcd_cert, etcd_key); its ``write_files`` entries
for the TLS files are written as coreos-cloudinit would (content and mode, under a
folder that stands for the node's root), and its etcd-proxy unit's ``ExecStart`` runs as
it is, with Debian's etcd 3.4 for the node's etcd binary: only the node's paths and the
proxy's listening port are moved into the test's folder. Through the proxy, a v2 write
reaches the cluster, as fleet's do. The same config without the client certificate is
refused by the cluster: the certificate is what lets the node in.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pxeserver.model import MAC, Node
from pxeserver.profiles import Group
from pxeserver.render.templates import HIDDEN_KEY, NODE_ETCD_TLS_DIR, Renderer

from ..support.certs import Pki
from ..support.etcd import ETCD, EtcdMember
from ..support.net import free_port, port_open, wait_for
from ..support.settings import make_settings

pytestmark = pytest.mark.etcd

NODE = Node(mac=MAC.parse("52:54:00:7e:03:01"), hostname="node-001", ip="192.0.2.31", token="t")


def node_config(tmp_path: Path, member: EtcdMember, pki: Pki, client: bool) -> dict[str, Any]:
    cluster = {
        "etcd_endpoints": [member.client_url],
        "etcd_peer_urls": [member.peer_url],
        "etcd_ca": str(pki.crt("ca")),
    }
    if client:
        cluster.update(etcd_cert=str(pki.crt("client")), etcd_key=str(pki.key("client")))
    settings = make_settings(tmp_path, {"cluster": cluster})
    text = Renderer(settings).cloud_config(
        NODE, settings.profiles["flatcar"], Group("g", "flatcar"), "http://192.0.2.1:8080"
    )
    return yaml.safe_load(text)


def proxy_command(doc: dict[str, Any], root: Path, port: int) -> list[str]:
    """The etcd-proxy unit's command, with the node's paths under ``root``."""
    unit = next(u for u in doc["coreos"]["units"] if u["name"] == "etcd-proxy.service")
    line = next(x for x in unit["content"].splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0] == "/opt/bin/etcd"
    moved = [ETCD]
    for arg in argv[1:]:
        if arg.startswith(NODE_ETCD_TLS_DIR):
            arg = str(root) + arg
        moved.append(
            arg.replace("http://127.0.0.1:2379", f"http://127.0.0.1:{port}").replace(
                "/var/lib/etcd-proxy", str(root / "var/lib/etcd-proxy")
            )
        )
    return moved


def write_files(doc: dict[str, Any], root: Path) -> list[Path]:
    """The config's TLS files, as coreos-cloudinit writes them (content, mode)."""
    written = []
    for entry in doc["write_files"]:
        if not entry["path"].startswith(NODE_ETCD_TLS_DIR):
            continue
        path = root / entry["path"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry["content"])
        path.chmod(int(entry["permissions"], 8))
        written.append(path)
    return written


@pytest.fixture
def proxy(tmp_path: Path, tls_etcd: EtcdMember, pki: Pki) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(client: bool) -> tuple[int, list[Path]]:
        root = tmp_path / ("node" if client else "node-ca-only")
        doc = node_config(tmp_path / "settings", tls_etcd, pki, client)
        files = write_files(doc, root)
        port = free_port()
        log = open(root / "proxy.log", "ab")  # noqa: SIM115 - the child keeps it
        command = proxy_command(doc, root, port)
        started.append(
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        log.close()
        wait_for(lambda: port_open(port), 30, "the etcd proxy to listen")
        return port, files

    yield start
    for p in started:
        p.terminate()
        p.wait(timeout=15)


def put(port: int, key: str, value: str) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/keys/{key}", data=f"value={value}".encode(), method="PUT"
    )
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_the_served_config_lets_the_nodes_etcd_proxy_into_a_tls_cluster(
    proxy: Any, tls_etcd: EtcdMember, pki: Pki
) -> None:
    port, files = proxy(client=True)
    assert sorted(f.name for f in files) == ["ca.pem", "client-key.pem", "client.pem"]
    assert [f.stat().st_mode & 0o777 for f in sorted(files)] == [0o644, 0o600, 0o644]
    assert (files[0].parent / "client-key.pem").read_text() == pki.key("client").read_text()
    wait_for(lambda: put(port, "pxeserver-proxy-test", "joined") in (200, 201), 30,
             "a write through the node's etcd proxy")  # fmt: skip
    # The cluster has it: read from a member directly, with the test's own certificate.
    url = f"{tls_etcd.client_url}/v2/keys/pxeserver-proxy-test"
    with urllib.request.urlopen(url, timeout=5, context=tls_etcd.ssl_context()) as resp:
        assert b'"value":"joined"' in resp.read()


def test_without_the_client_certificate_the_cluster_refuses_the_proxy(
    proxy: Any, tls_etcd: EtcdMember
) -> None:
    port, files = proxy(client=False)
    assert [f.name for f in files] == ["ca.pem"]
    log = files[0].parent.parent.parent.parent / "proxy.log"
    wait_for(lambda: "tls: bad certificate" in log.read_text(), 30, "the cluster to refuse it")
    statuses = {put(port, "pxeserver-proxy-refused", "x") for _ in range(5)}
    assert not statuses & {200, 201}, statuses


# -- what the configs carry -----------------------------------------------------------------


def rendered(tmp_path: Path, cluster: dict[str, Any]) -> dict[str, Any]:
    """Each shipped template's output for NODE: the two cloud-configs parsed, Ignition's."""
    profiles = {
        "coreos": {"kernel": "k", "cloud_config": "coreos.yaml.j2"},
        "flatcar": {"kernel": "k", "cloud_config": "flatcar.yaml.j2"},
        "ignition": {"kernel": "k", "ignition": "flatcar.ign.j2"},
    }
    settings = make_settings(tmp_path, {"cluster": cluster, "profiles": profiles})
    r = Renderer(settings)
    out = {}
    for name in ("coreos", "flatcar"):
        text = r.cloud_config(NODE, settings.profiles[name], Group("g", name), "http://h:1")
        out[name] = yaml.safe_load(text)
    ign = r.ignition(NODE, settings.profiles["ignition"], Group("g", "ignition"), "http://h:1")
    out["ignition"] = json.loads(ign)
    return out


def tls_files(out: dict[str, Any]) -> dict[str, dict[str, tuple[int, str]]]:
    """Per template: the files under /etc/pxeserver/etcd, with mode and content."""
    found: dict[str, dict[str, tuple[int, str]]] = {}
    for name in ("coreos", "flatcar"):
        found[name] = {
            f["path"]: (int(f["permissions"], 8), f["content"])
            for f in out[name].get("write_files", [])
            if f["path"].startswith(NODE_ETCD_TLS_DIR)
        }
    found["ignition"] = {
        f["path"]: (f["mode"], urllib.parse.unquote(f["contents"]["source"].removeprefix("data:,")))
        for f in out["ignition"]["storage"]["files"]
        if f["path"].startswith(NODE_ETCD_TLS_DIR)
    }
    return found


def proxy_flags(out: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Per template: the etcd proxy's TLS settings (etcd2 keys, or the unit's flags)."""
    etcd2 = out["coreos"]["coreos"]["etcd2"]
    found = {"coreos": {k: v for k, v in etcd2.items() if k.startswith("peer-")}}
    units = {
        "flatcar": {u["name"]: u.get("content", "") for u in out["flatcar"]["coreos"]["units"]},
        "ignition": {u["name"]: u.get("contents", "") for u in out["ignition"]["systemd"]["units"]},
    }
    for name, unit in units.items():
        argv = shlex.split(unit["etcd-proxy.service"].split("ExecStart=")[1].splitlines()[0])
        found[name] = {a[2:]: argv[i + 1] for i, a in enumerate(argv) if a.startswith("--peer-")}
    return found


def test_the_configs_carry_the_files_and_the_proxy_flags(tmp_path: Path, pki: Pki) -> None:
    cluster = {
        "etcd_endpoints": ["https://192.0.2.11:2379"],
        "etcd_ca": str(pki.crt("ca")),
        "etcd_cert": str(pki.crt("client")),
        "etcd_key": str(pki.key("client")),
    }
    out = rendered(tmp_path, cluster)
    ca, cert, key = (f"{NODE_ETCD_TLS_DIR}/{n}" for n in ("ca.pem", "client.pem", "client-key.pem"))
    expected = {
        ca: (0o644, pki.crt("ca").read_text()),
        cert: (0o644, pki.crt("client").read_text()),
        key: (0o600, pki.key("client").read_text()),
    }
    flags = {"peer-trusted-ca-file": ca, "peer-cert-file": cert, "peer-key-file": key}
    for template, files in tls_files(out).items():
        assert files == expected, template
    for template, found in proxy_flags(out).items():
        assert found == flags, template
    assert out["coreos"]["coreos"]["etcd2"]["initial-cluster"] == "etcd0=https://192.0.2.11:2380"
    # The CA alone: TLS without a client certificate.
    out = rendered(tmp_path / "ca", {**cluster, "etcd_cert": None, "etcd_key": None})
    for template, files in tls_files(out).items():
        assert files == {ca: expected[ca]}, template
    for template, found in proxy_flags(out).items():
        assert found == {"peer-trusted-ca-file": ca}, template


def test_a_cluster_without_tls_gets_neither(tmp_path: Path) -> None:
    out = rendered(tmp_path, {"etcd_endpoints": ["http://192.0.2.11:2379"]})
    assert all(files == {} for files in tls_files(out).values())
    assert all(found == {} for found in proxy_flags(out).values())


def test_a_preview_never_shows_the_key_the_config_carries(tmp_path: Path, pki: Pki) -> None:
    """explain (even for an operator with the API token), `pxeserver render` and the page
    show previews: the key is replaced there, and only there."""
    from pxeserver.daemon import make_service
    from pxeserver.web import create_app

    cluster = {
        "etcd_endpoints": ["https://192.0.2.11:2379"],
        "etcd_ca": str(pki.crt("ca")),
        "etcd_cert": str(pki.crt("client")),
        "etcd_key": str(pki.key("client")),
    }
    settings = make_settings(tmp_path, {"cluster": cluster, "server": {"api_token": "op"}})
    service = make_service(settings)
    try:
        web = create_app(settings, service).test_client()
        mac = "52:54:00:7e:03:02"
        assert web.get(f"/ipxe?mac={mac}").status_code == 200
        served = yaml.safe_load(web.get(f"/cloud-config?mac={mac}").text)
        keys = [f["content"] for f in served["write_files"] if f["path"].endswith("key.pem")]
        assert keys == [pki.key("client").read_text()]
        shown = web.get(f"/api/v1/nodes/{mac}/explain", headers={"Authorization": "Bearer op"})
        preview = yaml.safe_load(shown.json["cloud_config"])
        keys = [f["content"] for f in preview["write_files"] if f["path"].endswith("key.pem")]
        assert keys == [HIDDEN_KEY]
        assert "PRIVATE KEY" not in shown.text
    finally:
        service.close()
