"""The deployment files say what the docs say: docker-compose.yml, the Dockerfile, the
systemd unit and contrib/pxeserver.yaml. No container engine runs here, so these are
checked by parsing them and by asking the real programs (pxeserver's CLI, Debian's etcd
of the same version as the image, systemd-analyze) whether the commands are valid."""

from __future__ import annotations

import configparser
import ipaddress
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml

from pxeserver import cli, config

from ..support.settings import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
README = (REPO / "README.md").read_text()
DOCKERFILE = (REPO / "Dockerfile").read_text()
UNIT = REPO / "contrib" / "pxeserver.service"
SETTINGS_FILE = REPO / "contrib" / "pxeserver.yaml"
MOUNTED_AT = Path("/etc/pxeserver/pxeserver.yaml")


def settings() -> config.Settings:
    loaded, _ = config.load(SETTINGS_FILE, environ={"PXESERVER_API_TOKEN": "t"})
    return loaded


def parses(args: list[str]) -> click.Context:
    """Parse ``pxeserver ARGS`` with the real CLI without running it; raise if invalid."""
    ctx = cli.main.make_context("pxeserver", list(args))
    while isinstance(ctx.command, click.Group):
        # Click keeps a group's subcommand apart from the rest of the arguments.
        remaining = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not remaining:
            break
        name, command, rest = ctx.command.resolve_command(ctx, remaining)
        assert command is not None, f"no command {name}"
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


def ports_of(s: config.Settings) -> set[str]:
    return {
        f"{s.server.http_port}/tcp",
        f"{s.server.tftp_port}/udp",
        f"{s.server.dhcp_port}/udp",
        f"{s.server.pxe_port}/udp",
    }


def flags(command: list[str]) -> dict[str, str]:
    found = (arg.lstrip("-").partition("=") for arg in command if arg.startswith("--"))
    return {name: value for name, _, value in found}


def test_compose_services_images_and_network() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"etcd", "pxeserver"}
    assert all(s["network_mode"] == "host" for s in services.values())
    assert services["etcd"]["image"] in README
    assert services["pxeserver"]["build"] == "." and (REPO / "Dockerfile").exists()
    assert services["pxeserver"]["depends_on"] == ["etcd"]
    assert "PXESERVER_API_TOKEN" in services["pxeserver"]["environment"]


@pytest.mark.skipif(shutil.which("etcd") is None, reason="needs Debian's etcd-server")
def test_etcd_command_is_valid_for_etcd_34() -> None:
    command = COMPOSE["services"]["etcd"]["command"]
    tag = COMPOSE["services"]["etcd"]["image"].rsplit(":v", 1)[1]
    version = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout
    assert f"etcd Version: {tag.rsplit('.', 1)[0]}" in version  # same minor release
    known = subprocess.run(["etcd", "--help"], capture_output=True, text=True).stdout
    assert command[0] == "etcd"
    for flag in flags(command) | {"enable-v2": ""}:
        assert f"--{flag}" in known, f"etcd has no --{flag}"
    assert "enable-v2" in {a.lstrip("-") for a in command}  # fleet needs the v2 API


def test_ports_in_compose_dockerfile_settings_and_readme_agree() -> None:
    etcd = flags(COMPOSE["services"]["etcd"]["command"])
    etcd_ports = {
        f"{urlsplit(etcd['listen-client-urls']).port}/tcp",
        f"{urlsplit(etcd['listen-peer-urls']).port}/tcp",
    }
    assert etcd_ports == {"2379/tcp", "2380/tcp"}
    pxe_ports = ports_of(settings())
    assert pxe_ports == {"8080/tcp", "69/udp", "67/udp", "4011/udp"}
    exposed = set(re.search(r"^EXPOSE (.+)$", DOCKERFILE, re.MULTILINE).group(1).split())  # type: ignore[union-attr]
    assert exposed == pxe_ports
    documented = set(re.findall(r"^\| `(\d+/(?:tcp|udp))` \|", README, re.MULTILINE))
    assert documented == pxe_ports | etcd_ports
    # pxeserver reaches the etcd of the compose file, on this host.
    [store] = settings().store.etcd_endpoints
    assert urlsplit(store).port == urlsplit(etcd["listen-client-urls"]).port
    assert urlsplit(etcd["listen-client-urls"]).hostname == "0.0.0.0"


def interpolate(text: str, environ: dict[str, str]) -> str:
    """docker compose's ${NAME:?message}: the value, or compose refuses to start."""

    def value(m: re.Match[str]) -> str:
        if m[1] not in environ:
            raise KeyError(f"{m[1]}: {m[2]}")
        return environ[m[1]]

    return re.sub(r"\$\{(\w+):\?([^}]*)\}", value, text)


def loopback_urls(urls: list[str]) -> list[str]:
    found = []
    for url in urls:
        host = urlsplit(url).hostname or ""
        if host == "localhost" or (host[:1].isdigit() and ipaddress.ip_address(host).is_loopback):
            found.append(url)
    return found


def advertised(command: list[str], environ: dict[str, str]) -> list[str]:
    """The URLs etcd tells clients and peers to use (not the ones it listens on)."""
    args = flags([interpolate(a, environ) for a in command])
    urls = [args["advertise-client-urls"], args["initial-advertise-peer-urls"]]
    urls += [member.partition("=")[2] for member in args["initial-cluster"].split(",")]
    return [u for url in urls for u in url.split(",")]


def test_compose_etcd_advertises_an_address_nodes_can_reach() -> None:
    command = COMPOSE["services"]["etcd"]["command"]
    env = {"PXESERVER_BOOT_IP": "192.0.2.1"}
    urls = advertised(command, env)
    assert urls == ["http://192.0.2.1:2379", "http://192.0.2.1:2380", "http://192.0.2.1:2380"]
    assert loopback_urls(urls) == []
    with pytest.raises(KeyError, match="PXESERVER_BOOT_IP: set PXESERVER_BOOT_IP to this"):
        advertised(command, {})  # compose refuses to start without the address
    assert "PXESERVER_BOOT_IP" in README
    # The check finds loopback where it is: an etcd told to advertise 127.0.0.1.
    assert len(loopback_urls(advertised(command, {"PXESERVER_BOOT_IP": "127.0.0.1"}))) == 3


@pytest.mark.parametrize("path", [SETTINGS_FILE, REPO / "pxeserver.example.yaml"])
def test_shipped_settings_send_nodes_to_a_reachable_etcd(path: Path) -> None:
    loaded, _ = config.load(path, environ={"PXESERVER_API_TOKEN": "t"})
    assert loopback_urls([*loaded.cluster.etcd_endpoints, *config.peer_urls(loaded.cluster)]) == []


def test_volumes_reach_the_paths_the_settings_name() -> None:
    service = COMPOSE["services"]["pxeserver"]
    mounts: dict[str, str] = {}
    for entry in service["volumes"]:
        source, target, *_ = entry.split(":")
        mounts[target] = source
        if source.startswith("./") and source != "./assets":  # ./assets: made by fetch
            assert (REPO / source).exists(), f"{source} is not in the checkout"
        elif not source.startswith("./"):
            assert source in COMPOSE["volumes"], f"volume {source} is not declared"
        assert f"`{source}`" in README or source.startswith("./contrib"), f"README: {source}?"
    s = settings()
    paths = [s.paths.data_dir, s.paths.assets_dir, s.paths.tftp_root, s.paths.templates_dir]
    for path in paths:
        assert str(path) in mounts, f"{path} is not a volume: its data would be lost"
    assert mounts[str(MOUNTED_AT)] == "./contrib/pxeserver.yaml"
    declared = re.search(r"^VOLUME (\[.+\])$", DOCKERFILE, re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert set(yaml.safe_load(declared)) <= set(mounts)
    for etcd_volume in COMPOSE["services"]["etcd"]["volumes"]:
        assert etcd_volume.split(":")[0] in COMPOSE["volumes"]


def test_commands_parse_with_the_real_cli() -> None:
    command = COMPOSE["services"]["pxeserver"]["command"]
    ctx = parses(command)
    assert ctx.params["config"] == MOUNTED_AT and ctx.params["log_format"] == "json"
    entrypoint = re.search(r"^ENTRYPOINT (\[.+\])$", DOCKERFILE, re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert yaml.safe_load(entrypoint) == ["pxeserver"]
    default_cmd = re.search(r"^CMD (\[.+\])$", DOCKERFILE, re.MULTILINE).group(1)  # type: ignore[union-attr]
    parses(yaml.safe_load(default_cmd))
    # Every `docker compose run … pxeserver …` and `pxeserver …` line the README shows.
    shown = re.findall(r"^docker compose run --rm pxeserver (.+)$", README, re.MULTILINE)
    assert shown, "README shows no docker compose run line"
    for line in shown:
        parses(shlex.split(line))
    for source in re.findall(r"^COPY (\S+)", DOCKERFILE, re.MULTILINE):
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not here"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_systemd_unit_runs_the_documented_command() -> None:
    u = unit()
    exec_start = shlex.split(u["Service"]["ExecStart"])
    assert exec_start[0].endswith("/bin/pxeserver")
    ctx = parses(exec_start[1:])
    assert ctx.params["config"] == MOUNTED_AT
    s = settings()
    assert u["Service"]["User"] == "pxeserver"
    assert u["Service"]["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert Path("/var/lib") / u["Service"]["StateDirectory"] == s.paths.data_dir
    writable = u["Service"]["ReadWritePaths"].split()
    assert str(s.paths.data_dir) in writable and str(s.paths.assets_dir) in writable
    assert u["Install"]["WantedBy"] == "multi-user.target"
    assert "contrib/pxeserver.service" in README and "systemctl enable --now pxeserver" in README


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_finds_nothing_wrong(tmp_path: Path) -> None:
    copy = tmp_path / "pxeserver.service"
    copy.write_text(UNIT.read_text())
    out = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    complaints = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if str(copy) in line and "is not executable" not in line  # /opt/… is not installed
    ]
    assert complaints == [], complaints


def test_the_deployment_settings_are_valid(tmp_path: Path) -> None:
    s = settings()
    assert s.store.backend == "etcd" and s.server.api_token == "t"
    assert all(p.is_absolute() for p in (s.paths.data_dir, s.paths.assets_dir))
    assert s.profiles["flatcar"].kernel.startswith("flatcar/current/")
