"""The ``pxeserver`` command: serve, check, render, nodes, assets, demo.

This module reads the command line; what a command does beyond a few lines is in
:mod:`pxeserver.commands` (or :mod:`pxeserver.daemon` for ``serve``). Errors are one line
on stderr and exit status 1 (a settings file with several problems prints one line per
problem), translated in one place: :class:`Commands`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from .checks import check_settings, default_base_url
from .commands.nodes import DEFAULT_SERVER, Api, changes, details, echo, nothing_found, table
from .config import load
from .errors import ConfigError, PxeError
from .model import MAC, Machine

F = TypeVar("F", bound=Callable[..., Any])


class Commands(click.Group):
    """pxeserver's commands. Its errors end a command here, and nowhere else: every
    problem of a settings file one line each, any other error one line, exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            sys.exit(1)
        except PxeError as exc:
            click.echo(f"pxeserver: {exc}", err=True)
            sys.exit(1)


def config_option(f: F) -> F:
    return click.option(
        "--config",
        "config",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Settings file (YAML). Without one, built-in defaults.",
    )(f)


# -- the server that `nodes` and `demo` talk to --------------------------------------------
# --server and --token are global options, as in etcdctl and kubectl: accepted before the
# command (`pxeserver --server URL nodes list`), between (`pxeserver nodes --server URL
# list`) and after it (`pxeserver nodes list --server URL`). The last one given wins, then
# the environment, then the default.

SERVER_ENV = "PXESERVER_SERVER"
OLD_SERVER_ENV = "PXESERVER_URL"  # the variable's first name; still read
TOKEN_ENV = "PXESERVER_API_TOKEN"


@dataclass(frozen=True)
class Remote:
    server: str
    token: str | None
    origin: str  # how the server was chosen, for error messages


DEFAULT_ORIGIN = f"the default; give --server URL or set {SERVER_ENV}"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keep a global option where the command finds it: ``ctx.meta`` is shared by every
    context of one run, and options are processed left to right (a group's before its
    command's), so a later one replaces an earlier one. The server's comes with how it
    was chosen."""
    if value is None or param.name is None:
        return
    source = ctx.get_parameter_source(param.name)
    if source is ParameterSource.COMMANDLINE:
        origin = f"from --{param.name}"
    elif source is ParameterSource.ENVIRONMENT:
        origin = f"from {SERVER_ENV if os.environ.get(SERVER_ENV) else OLD_SERVER_ENV}"
    else:
        origin = DEFAULT_ORIGIN
    ctx.meta[f"pxeserver.{param.name}"] = (value, origin)


def server_options(f: F) -> F:
    """``--server`` and ``--token`` on a command or group that talks to a running server."""
    f = click.option(
        "--token",
        metavar="TOKEN",
        expose_value=False,
        callback=_remember,
        help=f"API token for changes (also before the command; or {TOKEN_ENV}).",
    )(f)
    return click.option(
        "--server",
        metavar="URL",
        expose_value=False,
        callback=_remember,
        help=f"The running server (also before the command; or {SERVER_ENV}; "
        f"default {DEFAULT_SERVER}).",
    )(f)


def remote(ctx: click.Context) -> Remote:
    server, origin = ctx.meta.get("pxeserver.server", (DEFAULT_SERVER, DEFAULT_ORIGIN))
    token, _ = ctx.meta.get("pxeserver.token", (None, ""))
    return Remote(server, token, origin)


def pass_api(f: Callable[..., Any]) -> Callable[..., Any]:
    """Call ``f`` with the :class:`Api` of the server this run names."""

    def run(*args: Any, **kwargs: Any) -> Any:
        r = remote(click.get_current_context())
        return f(Api(r.server, r.token, r.origin), *args, **kwargs)

    return functools.update_wrapper(run, f)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pxeserver")
@click.option(
    "--server",
    metavar="URL",
    envvar=[SERVER_ENV, OLD_SERVER_ENV],
    default=DEFAULT_SERVER,
    show_default=True,
    expose_value=False,
    callback=_remember,
    help=f"The running server that `nodes` and `demo` talk to (or {SERVER_ENV}).",
)
@click.option(
    "--token",
    metavar="TOKEN",
    envvar=TOKEN_ENV,
    expose_value=False,
    callback=_remember,
    help=f"API token for changes (or {TOKEN_ENV}).",
)
def main() -> None:
    """PXE-boot bare machines into cluster nodes."""


# -- serve -------------------------------------------------------------------------------


def serve_overrides(**flags: Any) -> dict[str, Any]:
    """Turn ``serve``'s flags into settings overrides; flags left unset change nothing."""
    o: dict[str, Any] = {}
    if flags.get("listen") is not None:
        o["server.listen"] = flags["listen"]
    for flag in ("http_port", "tftp_port", "dhcp_port", "pxe_port", "user", "log_format"):
        if flags.get(flag) is not None:
            o[f"server.{flag}"] = flags[flag]
    if flags.get("interface"):
        o["server.interface"] = flags["interface"]
    if flags.get("base_url"):
        o["server.base_url"] = flags["base_url"]
    if flags.get("no_dhcp"):
        o["server.dhcp"] = False
    if flags.get("no_tftp"):
        o["server.tftp"] = False
    if flags.get("etcd"):
        o["store.backend"] = "etcd"
        o["store.etcd_endpoints"] = [u.strip() for u in flags["etcd"].split(",") if u.strip()]
    if flags.get("data_dir"):
        o["paths.data_dir"] = str(Path(flags["data_dir"]).resolve())
    if flags.get("workers"):
        o["server.http_workers"] = flags["workers"]
    return o


@main.command()
@config_option
@click.option("--listen", metavar="ADDR", help="Address to listen on (default 0.0.0.0).")
@click.option("--interface", metavar="IFACE", help="Listen on this interface's address.")
@click.option("--http-port", type=click.IntRange(0, 65535), help="HTTP port (default 8080).")
@click.option("--tftp-port", type=click.IntRange(0, 65535), help="TFTP port (default 69).")
@click.option("--dhcp-port", type=click.IntRange(0, 65535), help="ProxyDHCP port (default 67).")
@click.option("--pxe-port", type=click.IntRange(0, 65535), help="PXE boot-server port (4011).")
@click.option("--no-dhcp", is_flag=True, help="Do not run the ProxyDHCP service.")
@click.option("--no-tftp", is_flag=True, help="Do not run the TFTP service.")
@click.option("--etcd", metavar="URL[,URL…]", help="Keep the registry in etcd at these URLs.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Embedded store folder (./var).")
@click.option("--base-url", metavar="URL", help="URL machines use to reach this server.")
@click.option("--workers", type=click.IntRange(1, 64), help="HTTP worker processes (2).")
@click.option("--user", metavar="USER", help="Drop to this user after binding the ports.")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log line format.")
def serve(config: Path | None, **flags: Any) -> None:
    """Run the server (ProxyDHCP, TFTP, HTTP) in the foreground."""
    from . import daemon

    try:
        code = daemon.serve(config, serve_overrides(**flags))
    except OSError as exc:
        raise PxeError(f"cannot start: {exc}") from exc
    sys.exit(code)


# -- check and render ----------------------------------------------------------------------


@main.command()
@config_option
def check(config: Path | None) -> None:
    """Validate settings, templates and assets; print every problem found."""
    from .daemon import make_store

    settings, warnings = load(config)
    problems = warnings + check_settings(settings, make_store)
    for problem in problems:
        click.echo(str(problem), err=True)
    errors = [p for p in problems if not p.warning]
    if errors:
        sys.exit(1)
    click.echo(
        f"{settings.source}: OK — {len(settings.profiles)} profiles, {len(settings.groups)} "
        f"groups, {len(problems)} warnings"
    )


@main.command()
@config_option
@click.option("--mac", required=True, help="The machine's MAC address.")
@click.option("--uuid", help="Its SMBIOS UUID.")
@click.option("--arch", help="Its iPXE buildarch: x86_64, i386, arm64 …")
@click.option("--platform", type=click.Choice(["pcbios", "efi"]), help="Its firmware.")
@click.option("--base-url", metavar="URL", help="The base URL machines use (from settings).")
@click.option("--no-registry", is_flag=True, help="Ignore the node's stored record.")
def render(
    config: Path | None,
    mac: str,
    uuid: str | None,
    arch: str | None,
    platform: str | None,
    base_url: str | None,
    no_registry: bool,
) -> None:
    """Print what a machine would get, and why, without registering anything."""
    from . import daemon
    from .model import parse_uuid

    settings, _ = load(config)
    machine = Machine(MAC.parse(mac), parse_uuid(uuid), arch, platform)
    service = daemon.make_service(settings, local=False)
    try:
        base = base_url or default_base_url(settings)
        preview = service.preview(machine, base, use_registry=not no_registry)
    finally:
        service.close()
    note = "" if preview.known else " (not registered yet: hostname is a placeholder)"
    click.echo(f"# machine {preview.node.mac}: hostname {preview.node.hostname}{note}")
    click.echo(f"# profile {preview.decision.profile}: {preview.decision.reason}")
    for verdict in preview.decision.verdicts:
        mark = "matches" if verdict.matched else "no match"
        click.echo(f"#   group {verdict.group}: {mark}: {verdict.why}")
    if preview.boot is not None:
        where = "local disk" if preview.boot.from_disk else "network"
        click.echo(f"# boots from the {where}: {preview.boot.why}")
    click.echo("\n# --- iPXE script ---")
    click.echo(preview.ipxe, nl=False)
    if preview.cloud_config is not None:
        click.echo("\n# --- cloud-config ---")
        click.echo(preview.cloud_config, nl=False)


# -- nodes (through a running server's API) ---------------------------------------------------


@main.group()
@server_options
def nodes() -> None:
    """List, inspect and steer nodes through a running server."""


@nodes.command("list")
@server_options
@click.option(
    "--state", type=click.Choice(["discovered", "booting", "configured", "ready", "lost"])
)
@click.option("--profile", help="Only nodes booting this profile.")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Only nodes with this label.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_api
def nodes_list(
    api: Api, state: str | None, profile: str | None, labels: tuple[str, ...], as_json: bool
) -> None:
    """List nodes."""
    found = api.nodes(state, profile, labels)
    click.echo(json.dumps(found, indent=2) if as_json else "\n".join(table(found)))
    if not found:  # said on stderr: stdout stays what scripts parse
        click.echo(nothing_found(api, state, profile, labels), err=True)


@nodes.command("show")
@server_options
@click.argument("mac")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_api
def nodes_show(api: Api, mac: str, as_json: bool) -> None:
    """Show one node and its timeline."""
    n = api.node(mac)
    click.echo(json.dumps(n, indent=2) if as_json else "\n".join(details(n)))


@nodes.command("set")
@server_options
@click.argument("mac")
@click.option("--profile", help="Assign this profile ('' to go back to the groups).")
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="K=V",
    help="Set a label (K= removes it). Repeatable.",
)
@click.option("--hostname", help="Rename the node.")
@click.option(
    "--reinstall",
    is_flag=True,
    help="Forget what it installed on its disk: its next boot installs its profile again.",
)
@pass_api
def nodes_set(
    api: Api,
    mac: str,
    profile: str | None,
    labels: tuple[str, ...],
    hostname: str | None,
    reinstall: bool,
) -> None:
    """Assign a profile, set labels, rename a node or have it reinstall."""
    body = changes(profile, labels, hostname, reinstall)
    for line in echo(api.set(mac, body), body):
        click.echo(line)


@nodes.command("forget")
@server_options
@click.argument("mac")
@pass_api
def nodes_forget(api: Api, mac: str) -> None:
    """Remove a node from the registry (it is registered anew when it boots)."""
    click.echo(f"{api.forget(mac)} forgotten")


# -- assets ---------------------------------------------------------------------------------


@main.group()
def assets() -> None:
    """Boot assets: OS kernels and initrds, boot loaders."""


@assets.group("fetch")
def assets_fetch() -> None:
    """Download an OS's PXE images into the assets folder and verify them."""


@assets_fetch.command("flatcar")
@config_option
@click.option(
    "--channel",
    type=click.Choice(["stable", "beta", "alpha", "lts"]),
    default="stable",
    show_default=True,
    help="Flatcar release channel.",
)
@click.option(
    "--arch",
    type=click.Choice(["amd64", "arm64"]),
    default="amd64",
    show_default=True,
    help="Machine architecture.",
)
@click.option(
    "--version", "version", metavar="V", help="A release, e.g. 4081.2.0 (default: current)."
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def fetch_flatcar(
    config: Path | None, channel: str, arch: str, version: str | None, no_progress: bool
) -> None:
    """Flatcar's PXE kernel and initrd, checked against Flatcar's signing key with gpg.

    Kept per version under ASSETS/flatcar/VERSION/ (flatcar-arm64/ for arm64), with
    ASSETS/flatcar/current pointing at the last version that verified. A file that fails
    verification is deleted and the command exits 1.
    """
    from .commands import flatcar

    settings, _ = load(config)
    flatcar.fetch(settings, channel, arch, version, progress=not no_progress, say=click.echo)


@assets.command("ipxe")
@config_option
@click.option("--target", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to copy into (default: paths.tftp_root of the settings).")  # fmt: skip
def assets_ipxe(config: Path | None, target: Path | None) -> None:
    """Copy undionly.kpxe, ipxe.efi and snponly.efi from Debian's ipxe package."""
    from .commands.ipxe import copy_ipxe

    if target is None:
        settings, _ = load(config)
        target = Path(settings.paths.tftp_root)
    try:
        for line in copy_ipxe(target):
            click.echo(line)
    except OSError as exc:
        raise PxeError(f"cannot copy into {target}: {exc}") from exc


# -- demo ------------------------------------------------------------------------------------


@main.command()
@server_options
@click.option("--mac", help="The VM's MAC address (default: a random 52:54:00:… one).")
@click.option("--timeout", type=click.FloatRange(10, 3600), default=180.0, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the VM running after it is ready.")
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the VM's serial console log goes (default: a new temporary folder).",
)
@click.option("--wait", type=click.FloatRange(0, 600), default=30.0, show_default=True,
              help="Seconds to wait for the server to answer (just started, say).")  # fmt: skip
def demo(mac: str | None, timeout: float, keep: bool, log_dir: Path | None, wait: float) -> None:
    """Boot one QEMU VM against a running server and follow it to ready (no root needed)."""
    from .commands import demo as demo_

    server = remote(click.get_current_context()).server
    address = MAC.parse(mac) if mac else None
    code = demo_.run(server, mac=address, timeout=timeout, keep=keep, log_dir=log_dir, wait=wait)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
