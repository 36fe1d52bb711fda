from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support.cli import run, write
from .support.etcd import EtcdMember
from .support.net import free_port, port_open
from .support.server import ServerProcess
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


def test_check_runs_the_real_engine_when_it_is_on_the_path(tmp_path: Path) -> None:
    from .support.fleettools import fleet_tools

    path = write(
        tmp_path,
        {
            "paths": {"templates_dir": str(REPO / "cloud-configs")},
            "profiles": {"a": {"kernel": "k", "cloud_config": "coreos.yaml.j2"}},
            "groups": [{"name": "d", "profile": "a"}],
            # check asks the cluster's etcd for its v2 API: loopback, where none listens
            "cluster": {"etcd_endpoints": ["http://127.0.0.1:9"]},
        },
    )
    env = {"PATH": f"{fleet_tools()}:/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-m", "pxeserver", "check", "--config", str(path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    # coreos-cloudinit v1.14 calls etcd2 and fleet deprecated (Container Linux dropped
    # them): a warning that the node's OS must still ship them, not an error.
    pattern = r'coreos-cloudinit -validate: line \d+: warning: deprecated key "fleet"'
    assert re.search(pattern, r.stderr), r.stderr
    assert "the node's OS must still ship it" in r.stderr
    # Without the binary, only pxeserver's own rules speak.
    r = run("check", "--config", str(path), cwd=tmp_path)
    assert r.returncode == 0 and "coreos-cloudinit -validate" not in r.stderr, r.stderr


def test_check_warns_about_a_cluster_etcd_nodes_cannot_use(tmp_path: Path, etcd: Any) -> None:
    no_v2 = EtcdMember("nov2", tmp_path / "nov2", tmp_path)
    no_v2.command = lambda: [a for a in EtcdMember.command(no_v2) if a != "--enable-v2"]  # type: ignore[method-assign]
    no_v2.start()
    try:
        path = write(
            tmp_path,
            {
                "profiles": {"a": {"kernel": "k"}},
                "groups": [{"name": "d", "profile": "a"}],
                "cluster": {"etcd_endpoints": [no_v2.client_url, etcd.client_url]},
            },
        )
        r = run("check", "--config", str(path), cwd=tmp_path)
    finally:
        no_v2.stop()
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    [v2] = [ln for ln in lines if "serves no v2 API" in ln]
    assert f"the etcd at {no_v2.client_url} (version 3.4." in v2 and "--enable-v2" in v2
    # The member started with --enable-v2 gets no such warning; both are loopback, which
    # nodes cannot reach (their etcd proxy would forward to itself).
    assert not any(etcd.client_url in ln and "v2 API" in ln for ln in lines), lines
    assert f"{etcd.client_url} is a loopback address" in r.stderr
    assert "cluster.etcd_peer_urls: warning: http://127.0.0.1:2380 is a loopback" in r.stderr


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


# -- the global options of the commands that talk to a running server ---------------------


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A running server whose changes need a token, with one node in its registry."""
    s = ServerProcess(
        tmp_path_factory.mktemp("cli-server"),
        settings={"server": {"api_token": TOKEN}},
        args=["--no-dhcp", "--no-tftp"],
    ).start()
    try:
        assert s.get(f"/ipxe?mac={NODE}")[0] == 200
        yield s
    finally:
        s.stop()


TOKEN = "cli-test-token"
NODE = "52:54:00:c1:00:01"


@pytest.mark.parametrize(
    "where",
    [
        "before the command",
        "between group and command",
        "after the command",
        "after the arguments",
    ],
)
def test_server_and_token_work_before_or_after_the_subcommand(
    tmp_path: Path, api_server: ServerProcess, where: str
) -> None:
    flags = ["--server", api_server.url, "--token", TOKEN]
    command = ["set", NODE, "--label", f"where={where.split()[0]}"]
    args = {
        "before the command": [*flags, "nodes", *command],
        "between group and command": ["nodes", *flags, *command],
        "after the command": ["nodes", command[0], *flags, *command[1:]],
        "after the arguments": ["nodes", *command, *flags],
    }[where]
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shown = run("nodes", "show", NODE, "--json", "--server", api_server.url, cwd=tmp_path)
    assert json.loads(shown.stdout)["labels"]["where"] == where.split()[0]
    # The positive control's negative: the same change without the token is refused.
    no_token = [a for a in args if a not in ("--token", TOKEN)]
    r = run(*no_token, cwd=tmp_path)
    assert r.returncode == 1 and "401" in r.stderr, r.stderr


def test_server_and_token_come_from_the_environment(
    tmp_path: Path, api_server: ServerProcess
) -> None:
    env = {"PXESERVER_SERVER": api_server.url, "PXESERVER_API_TOKEN": TOKEN}
    r = run("nodes", "set", NODE, "--label", "from=env", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    r = run("nodes", "list", cwd=tmp_path, env=env)
    assert r.returncode == 0 and NODE in r.stdout, r.stderr
    # The variable's first name still works.
    r = run("nodes", "list", cwd=tmp_path, env={"PXESERVER_URL": api_server.url})
    assert r.returncode == 0 and NODE in r.stdout, r.stderr
    # A flag on the command line wins over the environment, wherever it is.
    dead = f"http://127.0.0.1:{free_port()}"
    r = run("nodes", "list", "--server", dead, cwd=tmp_path, env=env)
    assert r.returncode == 1 and dead in r.stderr
    r = run("--server", dead, "nodes", "list", cwd=tmp_path, env=env)
    assert r.returncode == 1 and dead in r.stderr
    # Of two on the command line, the later one.
    r = run("--server", dead, "nodes", "list", "--server", api_server.url, cwd=tmp_path)
    assert r.returncode == 0 and NODE in r.stdout, r.stderr


def test_a_connection_error_names_the_server_and_how_it_was_chosen(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cases = [
        (["nodes", "list", "--server", dead], {}, f"cannot reach {dead} (from --server): "),
        (["nodes", "list"], {"PXESERVER_SERVER": dead}, f"{dead} (from PXESERVER_SERVER): "),
        (["demo", "--server", dead, "--wait", "0"], {}, f"cannot reach {dead} "),
    ]
    for args, env, said in cases:
        r = run(*args, cwd=tmp_path, env=env)
        assert r.returncode == 1, (args, r.stdout)
        assert r.stderr.count("\n") == 1 and said in r.stderr, (args, r.stderr)


def test_the_default_server_is_named_with_how_to_choose_another(tmp_path: Path) -> None:
    if port_open(8080):
        pytest.skip("something listens on 127.0.0.1:8080 here: the default server answers")
    r = run("nodes", "show", NODE, cwd=tmp_path)
    assert r.returncode == 1
    said = "cannot reach http://127.0.0.1:8080 (the default; give --server URL or set "
    assert r.stderr.count("\n") == 1 and said + "PXESERVER_SERVER): " in r.stderr, r.stderr
