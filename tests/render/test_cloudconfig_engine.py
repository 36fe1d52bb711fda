"""The real coreos-cloudinit judges the cloud-configs, beside pxeserver's own checks.

``coreos-cloudinit -validate`` (v1.14.0, built from the shared third_party sources by
tests/lab/build-fleet-tools.sh) runs on every config the shipped templates render, and on
a corpus of good and bad configs on which pxeserver's own rules (pxeserver/cloudconfig.py)
must reach the same verdict. Where the own rules are stricter on purpose, the case says
so and why; nowhere may they accept what the real engine rejects.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from pxeserver.model import MAC, Node
from pxeserver.profiles import Group
from pxeserver.render.cloudconfig import validate
from pxeserver.render.engine import engine_report
from pxeserver.render.templates import Renderer

from ..support.certs import Pki
from ..support.fleettools import fleet_tools
from ..support.settings import make_settings


@pytest.fixture(scope="module")
def engine() -> str:
    return str(fleet_tools() / "coreos-cloudinit")


def engine_rejects(engine: str, text: str) -> list[str]:
    return [str(e) for e in engine_report(text, engine) if e.rejects]


BASE = """#cloud-config
hostname: node-001
coreos:
  units:
    - name: x.service
      command: start
"""


def with_lines(*lines: str) -> str:
    return BASE + "\n".join(lines) + "\n"


# (name, config, accepted) — the verdict both must reach.
CORPUS: list[tuple[str, str, bool]] = [
    ("minimal", BASE, True),
    ("fleet public-ip with a dash", BASE + "  fleet:\n    public-ip: 192.0.2.5\n", True),
    ("fleet public_ip", BASE + "  fleet:\n    public_ip: 192.0.2.5\n", True),
    ("fleet etcd_username", BASE + "  fleet:\n    etcd_username: fleet\n", True),
    ("fleet unknown key", BASE + "  fleet:\n    public_address: 192.0.2.5\n", False),
    ("fleet verbosity a number", BASE + "  fleet:\n    verbosity: 2\n", True),
    ("fleet verbosity a word", BASE + "  fleet:\n    verbosity: loud\n", False),
    ("fleet metadata", BASE + '  fleet:\n    metadata: "region=lab,rack=r1"\n', True),
    ("etcd2 proxy on, unquoted", BASE + "  etcd2:\n    proxy: on\n", True),
    ("etcd2 proxy quoted", BASE + '  etcd2:\n    proxy: "readonly"\n', True),
    ("etcd2 proxy maybe", BASE + "  etcd2:\n    proxy: maybe\n", False),
    ("etcd2 listen_client_urls", BASE + "  etcd2:\n    listen_client_urls: http://x:1\n", True),
    ("etcd2 unknown key", BASE + "  etcd2:\n    listen-client-url: http://x:1\n", False),
    ("etcd2 heartbeat a word", BASE + "  etcd2:\n    heartbeat-interval: fast\n", False),
    ("etcd2 as a list", BASE + "  etcd2:\n    - proxy\n", False),
    ("update etcd-lock", BASE + "  update:\n    reboot-strategy: etcd-lock\n", True),
    ("update off, unquoted", BASE + "  update:\n    reboot-strategy: off\n", True),
    (
        "update best-effort (gone in v1.14)",
        BASE + "  update:\n    reboot-strategy: best-effort\n",
        False,
    ),
    ("update reboot_strategy", BASE + "  update:\n    reboot_strategy: reboot\n", True),
    ("update group", BASE + "  update:\n    group: beta\n", True),
    (
        "locksmith window",
        BASE + '  locksmith:\n    window_start: "Sun 02:00"\n    window_length: 1h\n',
        True,
    ),
    ("locksmith bad window", BASE + '  locksmith:\n    window_start: "noon"\n', False),
    ("unknown coreos section", BASE + "  flet:\n    metadata: a=b\n", False),
    ("unit command stop", BASE.replace("command: start", "command: stop"), True),
    ("unit command begin", BASE.replace("command: start", "command: begin"), False),
    ("unit enable true", BASE + "      enable: true\n", True),
    ("unit enable a word", BASE + "      enable: please\n", False),
    ("unit runtime yes", BASE + "      runtime: yes\n", True),
    ("unit unknown key", BASE + "      start: now\n", False),
    (
        "unit drop-ins",
        BASE + "      drop-ins:\n        - name: 10-a.conf\n          content: x\n",
        True,
    ),
    (
        "unit drop_ins",
        BASE + "      drop_ins:\n        - name: 10-a.conf\n          content: x\n",
        True,
    ),
    (
        "unit drop-in unknown key",
        BASE + "      drop-ins:\n        - name: 10-a.conf\n          text: x\n",
        False,
    ),
    ("units not a list", "#cloud-config\ncoreos:\n  units: fleet.service\n", False),
    ("ssh keys", with_lines("ssh_authorized_keys:", "  - ssh-ed25519 AAAA a@b"), True),
    ("ssh keys with a dash", with_lines("ssh-authorized-keys:", "  - ssh-ed25519 AAAA a@b"), True),
    ("ssh keys a string", with_lines("ssh_authorized_keys: ssh-ed25519 AAAA"), False),
    ("file", with_lines("write_files:", "  - path: /etc/a", "    content: x"), True),
    (
        "file mode quoted",
        with_lines("write_files:", "  - path: /etc/a", '    permissions: "0644"'),
        True,
    ),
    (
        "file mode unquoted",
        with_lines("write_files:", "  - path: /etc/a", "    permissions: 0644"),
        True,
    ),
    ("file mode 644", with_lines("write_files:", "  - path: /etc/a", "    permissions: 644"), True),
    (
        "file mode 0800",
        with_lines("write_files:", "  - path: /etc/a", "    permissions: 0800"),
        False,
    ),
    ("file mode rw", with_lines("write_files:", "  - path: /etc/a", "    permissions: rw"), False),
    (
        "file b64",
        with_lines(
            "write_files:", "  - path: /etc/a", "    encoding: b64", "    content: aGVsbG8="
        ),
        True,
    ),
    (
        "file bad base64",
        with_lines(
            "write_files:", "  - path: /etc/a", "    encoding: base64", "    content: '%%%'"
        ),
        False,
    ),
    (
        "file rot13",
        with_lines("write_files:", "  - path: /etc/a", "    encoding: rot13", "    content: x"),
        False,
    ),
    (
        "file under /usr",
        with_lines("write_files:", "  - path: /usr/bin/a", "    content: x"),
        False,
    ),
    ("file unknown key", with_lines("write_files:", "  - path: /etc/a", "    mode: 0644"), False),
    ("user", with_lines("users:", "  - name: ops", "    groups: [docker]"), True),
    (
        "user keys with dashes",
        with_lines(
            "users:", "  - name: ops", "    ssh-authorized-keys: [k]", "    no-create-home: true"
        ),
        True,
    ),
    ("user groups a string", with_lines("users:", "  - name: ops", "    groups: docker"), False),
    ("user unknown key", with_lines("users:", "  - name: ops", "    password: x"), False),
    ("unknown top key", with_lines("bogus: 1"), False),
    ("runcmd (cloud-init, not coreos-cloudinit)", with_lines("runcmd:", "  - echo hi"), False),
    ("write_files under coreos", BASE + "  write_files:\n    - path: /etc/a\n", False),
    ("not YAML", "#cloud-config\nhostname: [unclosed\n", False),
    ("wrong first line", BASE.replace("#cloud-config", "#cloud-confg"), False),
]

# Rejected by pxeserver's own rules only, on purpose: the real engine takes them, and the
# node then fails or silently does something else (see pxeserver/cloudconfig.py).
STRICTER: list[tuple[str, str, str]] = [
    ("hostname with _", BASE.replace("node-001", "node_001"), "hostnamectl refuses it"),
    ("unit name without a type", BASE.replace("x.service", "x"), "systemd needs a suffix"),
    (
        "unit listed twice",
        BASE + "    - name: x.service\n      command: start\n",
        "the second wins",
    ),
    (
        "drop-in not .conf",
        BASE + "      drop-ins:\n        - name: 10-a\n          content: x\n",
        "systemd ignores it",
    ),
    ("relative file path", with_lines("write_files:", "  - path: etc/a"), "written relative to /"),
    ("user without a name", with_lines("users:", "  - gecos: x"), "useradd fails"),
    ("manage_etc_hosts other", with_lines("manage_etc_hosts: yes"), "coreos-cloudinit fails"),
    (
        "a quote in fleet metadata",
        BASE + '  fleet:\n    metadata: "rack=\\"r1"\n',
        "written into the drop-in's Environment= as it is",
    ),
    (
        "a line break in an SSH key",
        with_lines("ssh_authorized_keys:", '  - "ssh-ed25519 AAAA a\\nssh-rsa BBBB b"'),
        "one item becomes two keys",
    ),
]


@pytest.mark.parametrize(("name", "text", "accepted"), CORPUS, ids=[c[0] for c in CORPUS])
def test_own_rules_agree_with_the_real_engine(
    engine: str, name: str, text: str, accepted: bool
) -> None:
    real = engine_rejects(engine, text)
    _, own = validate(text)
    assert (not real) == accepted, f"the real engine: {real or 'accepts'}"
    assert (not own) == accepted, f"pxeserver's rules: {own or 'accept'}"


@pytest.mark.parametrize(("name", "text", "why"), STRICTER, ids=[c[0] for c in STRICTER])
def test_own_rules_stricter_on_purpose(engine: str, name: str, text: str, why: str) -> None:
    assert engine_rejects(engine, text) == [], "the real engine rejects it too: move it"
    assert validate(text)[1], f"pxeserver's rules accept it ({why})"


def test_the_report_is_read_line_by_line(engine: str) -> None:
    text = BASE + "  fleet:\n    public_address: x\n  update:\n    reboot-strategy: best-effort\n"
    entries = engine_report(text, engine)
    assert [(e.line, e.kind) for e in entries if e.rejects] == [(8, "warning"), (10, "error")]
    _, own = validate(text)
    assert [e.split(":")[0] for e in own] == ["line 8", "line 10"], own


def tls_cluster(pki: Pki, client: bool) -> dict[str, Any]:
    """Cluster settings whose etcd speaks TLS: the CA, and a client certificate or not."""
    files = {"etcd_ca": str(pki.crt("ca"))}
    if client:
        files.update(etcd_cert=str(pki.crt("client")), etcd_key=str(pki.key("client")))
    return {"etcd_endpoints": ["https://192.0.2.11:2379", "https://192.0.2.12:2379"], **files}


def rendered_configs(tmp_path: Path, pki: Pki) -> list[tuple[str, str]]:
    """Every shape the shipped templates render: both templates, BIOS and UEFI, with and
    without labels, SSH keys, metadata and a known address, and on a cluster whose etcd
    speaks TLS, with a client certificate and with the CA alone."""
    settings = make_settings(
        tmp_path,
        {
            "cluster": {
                "etcd_endpoints": ["http://192.0.2.11:2379", "http://192.0.2.12:2379"],
                "fleet_metadata": {"region": "lab", "disk": "ssd"},
                "ssh_authorized_keys": ["ssh-ed25519 AAAAC3Nza ops@example", "ssh-rsa AAAAB3 x"],
                "domain": "lab.example",
            },
        },
    )
    bare = make_settings(tmp_path / "bare", {"cluster": {"fleet_metadata": {}}})
    tls = make_settings(tmp_path / "tls", {"cluster": tls_cluster(pki, client=True)})
    ca_only = make_settings(tmp_path / "ca", {"cluster": tls_cluster(pki, client=False)})
    variants = {"full": settings, "bare": bare, "tls": tls, "tls-ca-only": ca_only}
    out = []
    cases: list[Any] = itertools.product(
        ("coreos", "flatcar"),
        ("pcbios", "efi"),
        ({}, {"rack": "r1", "role": "worker"}),
        (None, "192.0.2.105"),
        variants.items(),
    )
    for profile_name, platform, labels, ip, (variant, chosen) in cases:
        group = Group(name="g", profile=profile_name, metadata={"etcd_binary": "bin/etcd-3.4"})
        node = Node(
            mac=MAC.parse("52:54:00:12:34:56"),
            hostname="node-007",
            platform=platform,
            arch="x86_64",
            ip=ip,
            labels=labels,
            token="t0ken",
        )
        text = Renderer(chosen).cloud_config(
            node, chosen.profiles[profile_name], group, "http://192.0.2.1:8080"
        )
        name = f"{profile_name}/{platform}/labels={bool(labels)}/ip={ip}/{variant}"
        out.append((name, text))
    return out


def test_every_config_the_templates_render_passes_the_real_engine(
    engine: str, tmp_path: Path, pki: Pki
) -> None:
    configs = rendered_configs(tmp_path, pki)
    assert len(configs) == 64
    for name, text in configs:
        # Rendering ran pxeserver's own rules already (it raises on an error).
        assert engine_rejects(engine, text) == [], f"{name}:\n{text}"
