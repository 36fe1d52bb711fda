from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from pxeserver.errors import RenderError
from pxeserver.model import MAC, Node, State
from pxeserver.profiles import Decision, Group, Profile
from pxeserver.render.cloudconfig import SAFE_LOADER
from pxeserver.render.placing import conf_string, to_json, word, yaml_scalar
from pxeserver.render.templates import Renderer

from ..support.settings import make_settings

NODE = Node(
    mac=MAC.parse("52:54:00:12:34:56"),
    hostname="node-007",
    ip="192.0.2.17",
    labels={"rack": "r1"},
    token="tok-123",
)
DEFAULT = Decision("coreos", Group("default", "coreos"), "default group")


def renderer(tmp_path: Path, raw: dict | None = None) -> Renderer:  # type: ignore[type-arg]
    return Renderer(make_settings(tmp_path, raw))


def lines(script: str) -> dict[str, str]:
    return {
        line.split()[0]: line for line in script.splitlines() if line and not line.startswith("#")
    }


def test_bios_script_has_kernel_initrd_and_cloud_config_url(tmp_path: Path) -> None:
    r = renderer(tmp_path)
    profile = r.settings.profiles["coreos"]
    script = r.ipxe_script(
        NODE.replace(platform="pcbios"), profile, DEFAULT, "http://192.0.2.1:8080"
    )
    assert script.startswith("#!ipxe\n")
    found = lines(script)
    assert found["kernel"].startswith("kernel http://192.0.2.1:8080/assets/coreos/vmlinuz ")
    assert "initrd=" not in found["kernel"]
    assert (
        "cloud-config-url=http://192.0.2.1:8080/cloud-config?mac=52:54:00:12:34:56"
        in found["kernel"]
    )
    assert (
        found["initrd"]
        == "initrd --name initrd.cpio.gz http://192.0.2.1:8080/assets/coreos/initrd.cpio.gz"
    )
    assert script.rstrip().endswith("boot")


def test_efi_names_the_initrd_on_the_kernel_line(tmp_path: Path) -> None:
    r = renderer(tmp_path)
    script = r.ipxe_script(
        NODE.replace(platform="efi"), r.settings.profiles["coreos"], DEFAULT, "http://h"
    )
    kernel = lines(script)["kernel"]
    assert " initrd=initrd.cpio.gz " in kernel
    # the name on the kernel line is the name iPXE gives the image
    assert "initrd --name initrd.cpio.gz " in script


def test_tftp_transport(tmp_path: Path) -> None:
    raw = {
        "profiles": {"t": {"kernel": "k/vmlinuz", "initrd": ["k/initrd"], "transport": "tftp"}},
        "groups": [{"name": "d", "profile": "t"}],
        "server": {"tftp_port": 6969},
    }
    r = renderer(tmp_path, raw)
    script = r.ipxe_script(
        NODE, r.settings.profiles["t"], Decision("t", None, "x"), "http://192.0.2.1:8080"
    )
    assert "kernel tftp://192.0.2.1:6969/assets/k/vmlinuz" in script
    assert "initrd --name initrd tftp://192.0.2.1:6969/assets/k/initrd" in script


def test_kernel_args_are_templates(tmp_path: Path) -> None:
    r = renderer(tmp_path)
    script = r.ipxe_script(NODE, r.settings.profiles["debug"], DEFAULT, "http://h")
    assert " rack=r1 " in lines(script)["kernel"]


def test_a_typo_in_a_kernel_argument_is_an_error(tmp_path: Path) -> None:
    raw = {
        "profiles": {"t": {"kernel": "k", "args": ["x={{ node.hostnme }}"]}},
        "groups": [{"name": "d", "profile": "t"}],
    }
    r = renderer(tmp_path, raw)
    with pytest.raises(RenderError, match="hostnme"):
        r.ipxe_script(NODE, r.settings.profiles["t"], Decision("t", None, "x"), "http://h")


def test_a_node_whose_disk_holds_its_profile_boots_from_disk(tmp_path: Path) -> None:
    disk = Profile("disk", "k", install="disk")
    r = renderer(tmp_path)
    # whatever its state (a DHCP sighting made it discovered again), the record decides
    installed = NODE.replace(state=State.DISCOVERED, installed="disk", installed_at=1.0e9)
    script = r.ipxe_script(installed, disk, DEFAULT, "http://h")
    assert script.rstrip().endswith("\nexit") and "kernel" not in script
    assert "# why: profile 'disk' installs to disk and this node phoned home ready" in script
    assert "(2001-09-09 01:46:40 UTC)" in script
    # not installed yet, or another profile on the disk: network boot to install it
    assert "kernel" in r.ipxe_script(NODE.replace(state=State.READY), disk, DEFAULT, "http://h")
    other = NODE.replace(installed="other")
    assert "kernel" in r.ipxe_script(other, disk, DEFAULT, "http://h")
    # a RAM profile network-boots every time, whatever the record says
    ram = Profile("disk", "k")  # same name, install: ram
    assert "kernel" in r.ipxe_script(installed, ram, DEFAULT, "http://h")


@pytest.mark.parametrize("template", ["coreos", "flatcar"])
def test_shipped_cloud_configs_render_valid_for_a_node(tmp_path: Path, template: str) -> None:
    raw = {
        "cluster": {
            "etcd_endpoints": ["http://10.0.0.1:2379", "http://10.0.0.2:2379"],
            "ssh_authorized_keys": ["ssh-ed25519 AAAAC3 op@example"],
            "fleet_metadata": {"region": "lab"},
        }
    }
    r = renderer(tmp_path, raw)
    profile = r.settings.profiles[template]
    text = r.cloud_config(NODE, profile, Group("default", template), "http://192.0.2.1:8080")
    doc = yaml.safe_load(text)
    assert doc["hostname"] == "node-007"
    assert doc["ssh_authorized_keys"] == ["ssh-ed25519 AAAAC3 op@example"]
    assert "tok-123" in text
    assert "http://192.0.2.1:8080/api/v1/nodes/52:54:00:12:34:56/ready" in text
    assert "etcd0=http://10.0.0.1:2380,etcd1=http://10.0.0.2:2380" in text
    units = {u["name"]: u for u in doc["coreos"]["units"]}
    assert units["pxeserver-ready.service"]["command"] == "start"
    assert units["pxeserver-heartbeat.timer"]["command"] == "start"
    assert "fleet.service" in units
    if template == "coreos":
        assert doc["coreos"]["etcd2"]["proxy"] == "on"
        assert doc["coreos"]["fleet"]["public_ip"] == "192.0.2.17"
        assert doc["coreos"]["fleet"]["metadata"] == "rack=r1,region=lab"


def test_a_template_producing_invalid_cloud_config_is_refused(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "bad.yaml.j2").write_text(
        "#cloud-config\nhostname: {{ node.hostname | yaml_scalar }}\ncoreos:\n  unit: []\n"
    )
    raw = {
        "paths": {"templates_dir": str(templates)},
        "profiles": {"b": {"kernel": "k", "cloud_config": "bad.yaml.j2"}},
        "groups": [{"name": "d", "profile": "b"}],
    }
    r = renderer(tmp_path, raw)
    with pytest.raises(RenderError, match=r"coreos\.unit: unknown key"):
        r.cloud_config(NODE, r.settings.profiles["b"], None, "http://h")


def test_a_template_with_an_undefined_variable_is_refused(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "typo.yaml.j2").write_text("#cloud-config\nhostname: {{ node.hostnam }}\n")
    raw = {
        "paths": {"templates_dir": str(templates)},
        "profiles": {"b": {"kernel": "k", "cloud_config": "typo.yaml.j2"}},
        "groups": [{"name": "d", "profile": "b"}],
    }
    r = renderer(tmp_path, raw)
    with pytest.raises(RenderError, match="hostnam"):
        r.cloud_config(NODE, r.settings.profiles["b"], None, "http://h")


def test_chain_script_asks_with_what_ipxe_knows(tmp_path: Path) -> None:
    script = renderer(tmp_path).chain_script("http://192.0.2.1:8080/")
    assert script.startswith("#!ipxe\n")
    assert (
        "chain --autofree http://192.0.2.1:8080/ipxe?mac=${netX/mac}&uuid=${uuid}&arch=${buildarch}&platform=${platform}"
        in script
    )


BREAKS = ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\x0b", "\x0c"]


@pytest.mark.parametrize("br", BREAKS)
@pytest.mark.parametrize("place", [yaml_scalar, to_json])
def test_yaml_values_keep_every_line_break_inside_the_scalar(br: str, place: Any) -> None:
    value = f"x{br}- path: /etc/evil{br}#"
    text = f"a: {place(value)}\nb: 1\n"
    assert "\n" not in text[:-1].split("\nb:")[0]  # the scalar is one line of YAML
    for loader in (yaml.SafeLoader, SAFE_LOADER):
        assert yaml.load(text, Loader=loader) == {"a": value, "b": 1}


@pytest.mark.parametrize(
    "value, plain",
    [("node-001", True), ("a.b_c", True), ("y", False), ("On", False), ("null", False),
     ("0644", False), ("1e5", False), ("-x", False), ("a b", False), ("a:b", False)],
)  # fmt: skip
def test_yaml_scalar_is_plain_only_where_every_yaml_reader_agrees(value: str, plain: bool) -> None:
    assert (yaml_scalar(value) == value) is plain
    assert yaml.safe_load(f"k: {yaml_scalar(value)}") == {"k": value}


@pytest.mark.parametrize("value", ["a b", "a\tb", 'a"b', "a'b", "a\\b", "a\u2028b", "a\x00b", ""])
def test_word_refuses_what_would_change_a_line(value: str) -> None:
    if value == "":
        assert word(value) == ""  # an unknown ip, say: nothing to carry, nothing to break
        return
    with pytest.raises(jinja2.TemplateRuntimeError, match=r"word: .* holds U\+"):
        word(value)


def test_conf_string_quotes_and_refuses_what_would_end_the_quotes() -> None:
    assert conf_string("rack=r 1,region=lab") == '"rack=r 1,region=lab"'
    for value in ['a"b', "a\\b", "a\nb", "a\u2029b"]:
        with pytest.raises(jinja2.TemplateRuntimeError, match="conf_string: "):
            conf_string(value)


def _templates(tmp_path: Path, text: str) -> Renderer:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "t.yaml.j2").write_text(text)
    raw = {
        "paths": {"templates_dir": str(templates)},
        "profiles": {"b": {"kernel": "k", "cloud_config": "t.yaml.j2"}},
        "groups": [{"name": "d", "profile": "b"}],
    }
    return renderer(tmp_path, raw)


@pytest.mark.parametrize(
    "line",
    [
        "hostname: {{ node.hostname }}",
        "hostname: {{ node.hostname | lower }}",
        "{% set h %}{{ node.hostname }}{% endset %}hostname: {{ h | yaml_scalar }}",
        "hostname: {{ node.hostname if node.ip else 'x' }}",
        "hostname: {{ node.labels }}",
    ],
)
def test_a_config_template_that_prints_a_value_raw_is_refused_naming_the_line(
    tmp_path: Path, line: str
) -> None:
    r = _templates(
        tmp_path, f"#cloud-config\n# {{{{ 1 + 2 }}}} numbers print as they are\n{line}\n"
    )
    with pytest.raises(RenderError) as info:
        r.cloud_config(NODE, r.settings.profiles["b"], None, "http://h")
    message = str(info.value)
    assert message.startswith(f"template t.yaml.j2, line 3: `{line}`: a value (")
    assert "yaml_scalar, tojson, word or conf_string" in message


def test_the_same_template_with_its_filter_renders(tmp_path: Path) -> None:
    """The positive control of the test above."""
    r = _templates(
        tmp_path,
        "#cloud-config\n# {{ 1 + 2 }} {{ node.mac | word }}\n"
        "hostname: {{ node.hostname | yaml_scalar }}\n",
    )
    text = r.cloud_config(NODE, r.settings.profiles["b"], None, "http://h")
    assert text.endswith("# 3 52:54:00:12:34:56\nhostname: node-007\n")


@pytest.mark.parametrize(
    "label, bad", [("r 7", "U+0020"), ("r7\nboot", "U+000A"), ("${x}", "U+0024"), ('r"', "U+0022")]
)
def test_a_kernel_argument_value_that_ipxe_cannot_carry_is_refused(
    tmp_path: Path, label: str, bad: str
) -> None:
    r = renderer(tmp_path)
    node = NODE.replace(labels={"rack": label})
    with pytest.raises(RenderError) as info:
        r.ipxe_script(node, r.settings.profiles["debug"], DEFAULT, "http://h")
    assert "profile 'debug': kernel argument \"rack={{ node.labels.get('rack', 'none') }}\"" in str(
        info.value
    )
    assert bad in str(info.value)


def test_a_kernel_argument_with_a_space_in_the_settings_is_refused(tmp_path: Path) -> None:
    raw = {
        "profiles": {"t": {"kernel": "k", "args": ["console=ttyS0 init=/bin/sh"]}},
        "groups": [{"name": "d", "profile": "t"}],
    }
    r = renderer(tmp_path, raw)
    with pytest.raises(RenderError, match=r"kernel argument 'console=ttyS0 init=/bin/sh'.*U\+0020"):
        r.ipxe_script(NODE, r.settings.profiles["t"], Decision("t", None, "x"), "http://h")


def test_names_in_script_comments_stay_on_their_line(tmp_path: Path) -> None:
    r = renderer(tmp_path)
    decision = Decision("coreos", Group("g\nboot", "coreos"), "group 'g\u2028x'\nshell")
    script = r.ipxe_script(NODE, r.settings.profiles["coreos"], decision, "http://h")
    assert "# why: group 'g\\u2028x'\\nshell\n" in script
    assert [line.split()[0] for line in script.splitlines()] == [
        "#!ipxe", "#", "#", "kernel", "initrd", "boot"
    ]  # fmt: skip
