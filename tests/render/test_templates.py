from pathlib import Path

import pytest
import yaml

from pxeserver.errors import RenderError
from pxeserver.model import MAC, Node, State
from pxeserver.profiles import Decision, Group, Profile
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
        "#cloud-config\nhostname: {{ node.hostname }}\ncoreos:\n  unit: []\n"
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
