"""Rendering: iPXE scripts, kernel arguments and cloud-configs, through one Jinja2 environment.

The environment is strict (a missing variable is an error, never an empty string) and the
variables every template sees come from one function, :func:`template_vars`. A rendered
cloud-config is validated (see :mod:`pxeserver.render.cloudconfig`) before it is returned.

No value can change the shape of what a machine runs: every value a template prints goes
through a placing filter, and kernel arguments are checked word by word
(:mod:`pxeserver.render.placing` says how).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2

from ..config import ClusterSettings, EtcdTls, Settings, peer_urls
from ..errors import RenderError
from ..model import Node
from ..profiles import BootChoice, Decision, Group, Profile, boot_choice
from . import cloudconfig, ignition
from .placing import (
    check_ipxe_word,
    conf_string,
    ipxe_value,
    one_line,
    only_placed,
    to_json,
    word,
    yaml_scalar,
)

log = logging.getLogger(__name__)

CHAIN_SCRIPT = """\
#!ipxe
# pxeserver: ask for the script made for this machine
:retry
chain --autofree {base}/ipxe?{query} || goto failed
:failed
echo pxeserver: no boot script from {base}, trying again in 10 seconds
sleep 10
goto retry
"""

# What iPXE knows about the machine, in the query of the per-machine script's URL.
CHAIN_QUERY = "&".join(
    [
        "mac=${netX/mac}",
        "uuid=${uuid}",
        "arch=${buildarch}",
        "platform=${platform}",
        "ip=${netX/ip}",
    ]
)

# `exit` hands the machine back to its firmware, which tries the next boot device: the
# local disk, in the usual network-then-disk boot order.
LOCAL_BOOT_SCRIPT = """\
#!ipxe
# pxeserver: {mac} ({hostname}) boots from its local disk, not profile {profile}
# why: {why}
echo pxeserver: {hostname} boots from its local disk
exit
"""


# Where a node's config puts the cluster's etcd TLS files (cluster.etcd_ca, etcd_cert,
# etcd_key), for its etcd proxy.
NODE_ETCD_TLS_DIR = "/etc/pxeserver/etcd"
# What a preview (explain, `pxeserver render`, the page) shows for that key: a preview is
# read by people and pages, and never needs it; the node's own config carries it.
HIDDEN_KEY = "<the etcd client key: not shown in a preview; the node's own config has it>"


@dataclass(frozen=True)
class Urls:
    """Where a machine finds pxeserver, as that machine sees it."""

    base: str  # http://host:port, no trailing slash
    tftp_port: int = 69

    def asset(self, path: str, transport: str) -> str:
        if "://" in path:
            return path
        quoted = quote(path.lstrip("/"))
        if transport == "tftp":
            host = urlsplit(self.base).hostname or "127.0.0.1"
            if ":" in host:
                host = f"[{host}]"
            port = "" if self.tftp_port == 69 else f":{self.tftp_port}"
            return f"tftp://{host}{port}/assets/{quoted}"
        return f"{self.base}/assets/{quoted}"

    def node(self, endpoint: str, node: Node) -> str:
        return f"{self.base}/{endpoint}?mac={node.mac}"

    def api(self, node: Node, action: str) -> str:
        return f"{self.base}/api/v1/nodes/{node.mac}/{action}"


def template_vars(
    node: Node,
    profile: Profile,
    group: Group | None,
    cluster: ClusterSettings,
    urls: Urls,
) -> dict[str, Any]:
    """The variables of every template: cloud-configs, Ignition configs and kernel arguments.

    - ``node``: mac, mac_hex, uuid, arch, platform, ip, hostname, fqdn, labels, token,
      boot_count
    - ``profile``: name, kernel, initrds, metadata
    - ``group``: name and metadata of the group that matched (empty for an operator's choice)
    - ``metadata``: profile metadata, overlaid by group metadata
    - ``cluster``: etcd_endpoints (list), etcd_endpoints_csv, etcd_initial_cluster (for an
      etcd proxy: ``etcd0=http://…:2380,…``), fleet_metadata (node labels
      overlay the cluster's), fleet_metadata_csv, ssh_authorized_keys, domain,
      heartbeat_interval, heartbeat_ttl, and etcd_tls: empty unless the cluster's etcd
      speaks TLS, else ca_file, cert_file, key_file (where the node keeps them, under
      ``/etc/pxeserver/etcd/``) and ca_pem, cert_pem, key_pem (their text, for
      ``write_files``; cert and key empty for a CA alone)
    - ``urls``: base, ready, heartbeat, cloud_config, ignition, assets
    """
    fqdn = f"{node.hostname}.{cluster.domain}" if cluster.domain else node.hostname
    fleet_metadata = {**cluster.fleet_metadata, **node.labels}
    group_meta = dict(group.metadata) if group else {}
    return {
        "node": {
            "mac": node.mac.value,
            "mac_hex": node.mac.hex,
            "uuid": node.uuid or "",
            "arch": node.arch or "",
            "platform": node.platform or "",
            "ip": node.ip or "",
            "hostname": node.hostname,
            "fqdn": fqdn,
            "labels": dict(node.labels),
            "token": node.token,
            "boot_count": node.boot_count,
        },
        "profile": {
            "name": profile.name,
            "kernel": profile.kernel,
            "initrds": list(profile.initrds),
            "metadata": dict(profile.metadata),
        },
        "group": {"name": group.name if group else "", "metadata": group_meta},
        "metadata": {**profile.metadata, **group_meta},
        "cluster": {
            "etcd_endpoints": list(cluster.etcd_endpoints),
            "etcd_endpoints_csv": ",".join(cluster.etcd_endpoints),
            "etcd_initial_cluster": ",".join(
                f"etcd{i}={url}" for i, url in enumerate(peer_urls(cluster))
            ),
            "fleet_metadata": fleet_metadata,
            "fleet_metadata_csv": fleet_metadata_csv(fleet_metadata),
            "ssh_authorized_keys": list(cluster.ssh_authorized_keys),
            "domain": cluster.domain or "",
            "heartbeat_interval": cluster.heartbeat_interval,
            "heartbeat_ttl": cluster.heartbeat_ttl,
            "etcd_tls": node_etcd_tls(cluster.etcd_tls),
        },
        "urls": {
            "base": urls.base,
            "ready": urls.api(node, "ready"),
            "heartbeat": urls.api(node, "heartbeat"),
            "cloud_config": urls.node("cloud-config", node),
            "ignition": urls.node("ignition", node),
            "assets": f"{urls.base}/assets",
        },
    }


def node_etcd_tls(tls: EtcdTls | None) -> dict[str, str]:
    """``cluster.etcd_tls``: what a node needs to reach the cluster's etcd over TLS."""
    if tls is None:
        return {}
    client = tls.cert is not None
    return {
        "ca_file": f"{NODE_ETCD_TLS_DIR}/ca.pem",
        "ca_pem": tls.ca_pem,
        "cert_file": f"{NODE_ETCD_TLS_DIR}/client.pem" if client else "",
        "cert_pem": tls.cert_pem,
        "key_file": f"{NODE_ETCD_TLS_DIR}/client-key.pem" if client else "",
        "key_pem": tls.key_pem,
    }


def fleet_metadata_csv(metadata: Mapping[str, Any]) -> str:
    """fleet's ``metadata`` setting, ``key=value,key=value``. A ',' or '=' in a key or
    value would make other keys of it: refused (labels and settings refuse them first)."""
    for key, value in metadata.items():
        if {",", "="} & set(f"{key}{value}"):
            raise RenderError(
                f"fleet metadata {key}={value!r}: a ',' or '=' in a label or fleet_metadata "
                "entry would split it into other entries"
            )
    return ",".join(f"{k}={v}" for k, v in sorted(metadata.items()))


class Renderer:
    """Renders what a machine receives. One per process; templates are cached by Jinja2."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(settings.paths.templates_dir)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=True,
        )
        self.env.filters.update(
            tojson=to_json, yaml_scalar=yaml_scalar, word=word, conf_string=conf_string
        )
        # Overlays of the one environment, each with the check of its output language.
        self.config_env = self.env.overlay(finalize=only_placed)
        self.args_env = self.env.overlay(finalize=ipxe_value)

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one renderer per process, bounded cache
    def _arg_template(self, text: str) -> jinja2.Template:
        return self.args_env.from_string(text)

    def urls(self, base: str) -> Urls:
        return Urls(base.rstrip("/"), self.settings.server.tftp_port)

    def chain_script(self, base: str) -> str:
        return CHAIN_SCRIPT.format(base=base.rstrip("/"), query=CHAIN_QUERY)

    def kernel_args(self, node: Node, profile: Profile, variables: Mapping[str, Any]) -> list[str]:
        args = []
        for arg in profile.args:
            try:
                args.append(self._arg_template(arg).render(variables) if "{" in arg else arg)
            except jinja2.TemplateError as exc:
                raise RenderError(
                    f"profile {profile.name!r}: kernel argument {arg!r}: {exc}"
                ) from exc
        urls = variables["urls"]
        if profile.cloud_config and not any(a.startswith("cloud-config-url=") for a in args):
            args.append(f"cloud-config-url={urls['cloud_config']}")
        if profile.ignition and not any(a.startswith("ignition.config.url=") for a in args):
            args.append(f"ignition.config.url={urls['ignition']}")
        for given, arg in zip(profile.args, args):
            check_ipxe_word(arg, f"profile {profile.name!r}: kernel argument {given!r}")
        for arg in args[len(profile.args) :]:
            check_ipxe_word(arg, f"profile {profile.name!r}: kernel argument {arg!r}")
        return args

    @staticmethod
    def boot_choice(node: Node, profile: Profile) -> BootChoice:
        """Network boot or local disk for ``node`` (see :func:`profiles.boot_choice`)."""
        at = ""
        if node.installed_at:
            when = datetime.fromtimestamp(node.installed_at, timezone.utc)
            at = when.strftime("%Y-%m-%d %H:%M:%S UTC")
        return boot_choice(profile, node.installed, at)

    def ipxe_script(self, node: Node, profile: Profile, decision: Decision, base: str) -> str:
        """The machine's own iPXE script: kernel, initrds, arguments, then boot; or, for a
        node whose disk holds its profile, ``exit`` to boot from that disk."""
        choice = self.boot_choice(node, profile)
        if choice.from_disk:
            hostname = node.hostname or str(node.mac)
            check_ipxe_word(hostname, f"{node.mac}: hostname")  # echoed: one word
            return LOCAL_BOOT_SCRIPT.format(
                mac=node.mac,
                hostname=hostname,
                profile=one_line(repr(profile.name)),
                why=one_line(choice.why),
            )
        urls = self.urls(base)
        variables = template_vars(node, profile, decision.group, self.settings.cluster, urls)
        args = self.kernel_args(node, profile, variables)
        efi = (node.platform or "").lower() == "efi"
        names = [PurePosixPath(urlsplit(i).path if "://" in i else i).name for i in profile.initrds]
        kernel = urls.asset(profile.kernel, profile.transport)
        initrds = [urls.asset(path, profile.transport) for path in profile.initrds]
        for text in [kernel, *initrds, *names]:
            check_ipxe_word(text, f"profile {profile.name!r}: kernel or initrd {text!r}")
        kernel_line = ["kernel", kernel]
        if efi:
            # UEFI kernels find their initramfs only if it is named on the command line.
            kernel_line += [f"initrd={name}" for name in names]
        kernel_line += args
        lines = [
            "#!ipxe",
            one_line(f"# pxeserver: {node.mac} ({node.hostname}) boots profile {profile.name!r}"),
            one_line(f"# why: {decision.reason}"),
            " ".join(kernel_line),
        ]
        lines += [f"initrd --name {name} {url}" for name, url in zip(names, initrds)]
        lines.append("boot")
        return "\n".join(lines) + "\n"

    def _cluster(self, preview: bool) -> ClusterSettings:
        """The cluster settings a config is rendered with; a preview's hides the nodes'
        etcd key (:data:`HIDDEN_KEY`)."""
        cluster = self.settings.cluster
        if preview and cluster.etcd_tls is not None and cluster.etcd_tls.key_pem:
            hidden = dataclasses.replace(cluster.etcd_tls, key_pem=HIDDEN_KEY)
            return dataclasses.replace(cluster, etcd_tls=hidden)
        return cluster

    def cloud_config(
        self, node: Node, profile: Profile, group: Group | None, base: str, *, preview: bool = False
    ) -> str:
        """The node's cloud-config, validated. Raises :class:`RenderError` on any problem.
        With ``preview``, as shown to people rather than served (:meth:`_cluster`)."""
        if not profile.cloud_config:
            raise RenderError(f"profile {profile.name!r} has no cloud_config template")
        cluster = self._cluster(preview)
        variables = template_vars(node, profile, group, cluster, self.urls(base))
        text = self.render_template(profile.cloud_config, variables)
        _, errors = cloudconfig.validate(text)
        if errors:
            raise RenderError(
                f"template {profile.cloud_config} rendered an invalid cloud-config for "
                f"{node.mac}: " + "; ".join(errors)
            )
        return text

    def ignition(
        self, node: Node, profile: Profile, group: Group | None, base: str, *, preview: bool = False
    ) -> str:
        """The node's Ignition (spec 3) config, validated. Raises :class:`RenderError`.
        With ``preview``, as shown to people rather than served (:meth:`_cluster`)."""
        if not profile.ignition:
            raise RenderError(f"profile {profile.name!r} has no ignition template")
        variables = template_vars(node, profile, group, self._cluster(preview), self.urls(base))
        text = self.render_template(profile.ignition, variables)
        _, errors = ignition.validate(text)
        if errors:
            raise RenderError(
                f"template {profile.ignition} rendered an invalid Ignition config for "
                f"{node.mac}: " + "; ".join(errors)
            )
        return text

    def render_template(self, name: str, variables: Mapping[str, Any]) -> str:
        """A cloud-config or Ignition template, with every printed value placed."""
        try:
            template = self.config_env.get_template(name)
        except jinja2.TemplateNotFound as exc:
            raise RenderError(
                f"template {name} not found in {self.settings.paths.templates_dir}"
            ) from exc
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"template {name}, line {exc.lineno}: {exc.message}") from exc
        try:
            return template.render(variables)
        except jinja2.TemplateError as exc:
            raise RenderError(f"template {name}{_where(template, exc)}: {exc}") from exc


def _where(template: jinja2.Template, exc: BaseException) -> str:
    """``, line N: `text of the line``` for the template line ``exc`` was raised on."""
    lineno = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == template.filename:
            lineno = frame.lineno
    if lineno is None or not template.filename:
        return ""
    try:
        with open(template.filename, encoding="utf-8") as f:
            text = f.read().splitlines()[lineno - 1].strip()
    except (OSError, IndexError):
        return f", line {lineno}"
    return f", line {lineno}: `{text}`"
