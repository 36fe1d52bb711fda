from __future__ import annotations

from pathlib import Path

from .support.cli import run, write
from .support.settings import REPO


def test_check_defaults_passes_and_flags_missing_assets(tmp_path: Path) -> None:
    r = run("check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    assert "warning: " in r.stderr and "flatcar_production_pxe.vmlinuz does not exist" in r.stderr


def test_check_two_default_groups(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "profiles": {"a": {"kernel": "k"}},
            "groups": [{"name": "x", "profile": "a"}, {"name": "y", "profile": "a"}],
        },
    )
    r = run("check", "--config", str(path), cwd=tmp_path)
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[0]
    assert line.startswith(f"{path}: groups[1] (y): is a second default group")
    assert " — " in line


def test_check_template_typo(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x.yaml.j2").write_text("#cloud-config\nhostname: {{ node.hostnaem }}\n")
    path = write(
        tmp_path,
        {
            "paths": {"templates_dir": "t"},
            "profiles": {"a": {"kernel": "k", "cloud_config": "x.yaml.j2"}},
            "groups": [{"name": "d", "profile": "a"}],
        },
    )
    r = run("check", "--config", str(path), cwd=tmp_path)
    assert r.returncode == 1
    where = f"{path}: profiles.a.cloud_config: template x.yaml.j2, line 2: "
    assert where + "`hostname: {{ node.hostnaem }}`: 'dict object' has no attribute" in r.stderr
    assert "— fix " in r.stderr


def test_check_template_that_renders_invalid_cloud_config(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x.yaml.j2").write_text(
        "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      command: launch\n"
    )
    path = write(
        tmp_path,
        {
            "paths": {"templates_dir": "t"},
            "profiles": {"a": {"kernel": "k", "cloud_config": "x.yaml.j2"}},
            "groups": [{"name": "d", "profile": "a"}],
        },
    )
    r = run("check", "--config", str(path), cwd=tmp_path)
    assert r.returncode == 1 and "command: 'launch' is not one of" in r.stderr


def test_check_refuses_a_template_that_pastes_a_value_raw(tmp_path: Path) -> None:
    """The hole of issue 16: a value pasted into YAML without the quoting filter."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "raw.yaml.j2").write_text(
        "#cloud-config\nhostname: {{ node.hostname | yaml_scalar }}\nwrite_files:\n"
        "  - path: /etc/fleet/fleet.conf\n    content: |\n"
        '      public_ip="{{ node.ip }}"\n'
    )
    (tmp_path / "t" / "quoted.yaml.j2").write_text(
        "#cloud-config\nhostname: {{ node.hostname | yaml_scalar }}\nwrite_files:\n"
        "  - path: /etc/fleet/fleet.conf\n    content: |\n"
        "      public_ip={{ node.ip | conf_string }}\n"
    )
    raw = {
        "paths": {"templates_dir": "t"},
        "profiles": {"a": {"kernel": "k", "cloud_config": "raw.yaml.j2"}},
        "groups": [{"name": "d", "profile": "a"}],
    }
    r = run("check", "--config", str(write(tmp_path, raw)), cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "profiles.a.cloud_config: template raw.yaml.j2, line 6: " in r.stderr
    assert "{{ node.ip }}" in r.stderr and "yaml_scalar" in r.stderr
    # positive control: the same template with the value through its filter passes
    raw["profiles"]["a"]["cloud_config"] = "quoted.yaml.j2"  # type: ignore[index]
    r = run("check", "--config", str(write(tmp_path, raw)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_render_explains_and_registers_nothing(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "profiles": {
                "a": {
                    "kernel": "k/vmlinuz",
                    "initrd": ["k/initrd"],
                    "cloud_config": "coreos.yaml.j2",
                }
            },
            "groups": [
                {"name": "d", "profile": "a"},
                {"name": "efi", "profile": "a", "selectors": {"platform": "efi"}},
            ],
            "paths": {"templates_dir": str(REPO / "cloud-configs")},
            "server": {"base_url": "http://192.0.2.1:8080"},
        },
    )
    r = run(
        "render",
        "--config",
        str(path),
        "--mac",
        "52-54-00-12-34-56",
        "--platform",
        "efi",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "# profile a: group 'efi': all 1 selectors match (platform=efi)" in r.stdout
    assert "#   group d: matches: default group" in r.stdout
    assert "kernel http://192.0.2.1:8080/assets/k/vmlinuz initrd=initrd " in r.stdout
    assert "#cloud-config" in r.stdout
    assert not (tmp_path / "var" / "pxeserver.db").exists() or "52:54:00:12:34:56" not in (
        tmp_path / "var" / "pxeserver.db"
    ).read_bytes().decode(errors="ignore")


def test_render_bad_mac_is_one_line(tmp_path: Path) -> None:
    r = run("render", "--mac", "nope", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "not a MAC address" in r.stderr


def test_nodes_without_a_server_is_one_line(tmp_path: Path) -> None:
    from .support.net import free_port

    r = run("nodes", "--server", f"http://127.0.0.1:{free_port()}", "list", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "is `pxeserver serve` running?" in r.stderr


def test_serve_with_a_bad_config_says_why(tmp_path: Path) -> None:
    path = write(tmp_path, {"server": {"http_port": "eighty"}})
    r = run("serve", "--config", str(path), cwd=tmp_path)
    assert r.returncode == 1
    assert f"{path}: server.http_port: is 'eighty' — use a whole number" in r.stderr


def test_nodes_set_with_a_line_separator_in_a_label_says_which_label(tmp_path: Path) -> None:
    """Labels from the CLI go through the API: its 400 is the CLI's one line."""
    from .support.server import ServerProcess

    mac = "52:54:00:0c:11:01"
    server = ServerProcess(tmp_path, args=["--no-dhcp", "--no-tftp"]).start()
    try:
        assert server.get(f"/ipxe?mac={mac}")[0] == 200
        cli = ("nodes", "--server", server.url, "set", mac)
        r = run(*cli, "--label", "rack=r1\u2028write_files:", cwd=tmp_path)
        assert r.returncode == 1
        assert r.stderr.strip() == (
            f"pxeserver: PATCH /api/v1/nodes/{mac}: 400 label rack: the value holds U+2028 "
            "(LINE SEPARATOR): a label is one line of text without quotes, commas, '=' or "
            "backslashes (labels become fleet metadata, written as key=value,key=value)"
        )
        ok = run(*cli, "--label", "rack=r1 # - path: x", cwd=tmp_path)  # positive control
        assert ok.returncode == 0, ok.stderr
    finally:
        server.stop()
