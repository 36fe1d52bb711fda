"""Rendering: iPXE scripts, kernel arguments and cloud-configs, through one Jinja2 environment.

The environment is strict (a missing variable is an error, never an empty string) and the
variables every template sees come from one function, :func:`template_vars`. A rendered
cloud-config is validated (see :mod:`pxeserver.cloudconfig`) before it is returned.

No value can change the shape of what a machine runs. Values come from the boot network
(the ip, uuid, arch a machine reports) and from operators (labels, hostnames, metadata);
the edges refuse what they can, and the renderer holds the line by construction:

- In a cloud-config or Ignition template, every ``{{ … }}`` that prints a string must end
  in one of the placing filters; a string printed any other way is an error
  (:class:`UnplacedValue`, naming the template line), so a template that pastes a raw
  variable fails ``pxeserver check``, the tests, and every request for it. Numbers print
  as they are. The filters, by where the value goes:

  ``yaml_scalar``  a YAML value (``hostname: {{ node.hostname | yaml_scalar }}``): plain
                   when YAML (1.1 or 1.2) reads it back as the same string, else
                   double-quoted with every non-ASCII character escaped, so CR, U+0085,
                   U+2028 and U+2029 (line breaks to YAML) stay inside the scalar.
  ``tojson``       a JSON value, also a YAML flow value (ASCII only, for the same reason).
  ``word``         one word inside a line of a file, e.g. a URL in a unit's ``ExecStart=``
                   or a comment: refused unless it has no whitespace, control characters,
                   line or paragraph separators, quotes or backslashes.
  ``conf_string``  a double-quoted value of a ``key="value"`` line (fleet.conf, which
                   fleet's reader takes without escapes): refused if it holds a quote, a
                   backslash, a control character or a line break; spaces are fine.

  Why a type and not a search of the template's text: the check runs on what is printed,
  so nothing the template does (a ``{% set %}`` block, a filter chain, a conditional) can
  get a raw value past it; only these filters make the marker type (:class:`Placed`),
  and the template cannot make one itself. ``pxeserver check`` renders each template for
  a sample node of every group, so a raw paste on a branch that sample takes is found
  before a machine asks; a branch only some nodes take is found at its first render.
  Reuse fragments with ``{% include %}`` rather than a macro (a macro's output is a
  plain string, and pasting it is refused).
- Kernel arguments are templates too (``rack={{ node.labels.rack }}``): every value they
  print, and then every whole argument, is checked against what iPXE can carry in one
  word: no whitespace, control characters or line separators, no ``"`` (the kernel's own
  quoting) and, in a value, no ``$`` (iPXE expands ``${…}``). A value that fails is
  refused with a :class:`RenderError`, never stripped.
- What else goes into an iPXE or PXELINUX script (names in comments) is made one line.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import traceback
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2

from . import cloudconfig, ignition
from .config import ClusterSettings, Settings, peer_urls
from .errors import RenderError
from .model import Node, unsafe_character
from .profiles import BootChoice, Decision, Group, Profile, boot_choice

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
      heartbeat_interval, heartbeat_ttl
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


class Placed(str):
    """Text that a placing filter made fit for where the template prints it. Only the
    filters below make one; config templates refuse every other string."""

    __slots__ = ()


class UnplacedValue(jinja2.TemplateRuntimeError):
    """A config template printed a string that went through no placing filter."""


class RefusedValue(jinja2.TemplateRuntimeError):
    """A value cannot be carried where the template puts it (a line break in a word …)."""


PLACING_FILTERS = "yaml_scalar, tojson, word or conf_string"
# YAML 1.1 reads these as booleans or null (coreos-cloudinit's Go reader included).
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def yaml_scalar(value: object) -> Placed:
    """``value`` as a YAML scalar that reads back as the same string.

    Plain when that is safe (``node-001``), double-quoted when YAML would read something
    else (a hostname ``0``, ``on`` or ``1e5`` is a number or a boolean to YAML) or when
    it holds anything but letters, digits, ``_``, ``.`` and ``-``. Quoted text is JSON,
    ASCII only: every line break YAML knows becomes an escape inside the quotes.
    """
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return Placed(text)
    return Placed(json.dumps(text, ensure_ascii=True))


def to_json(value: object) -> Placed:
    """``value`` as JSON (also a YAML flow value), ASCII only (see :func:`yaml_scalar`)."""
    return Placed(json.dumps(value, ensure_ascii=True))


def _not_in_a_line(ch: str) -> bool:
    return ch.isspace() or ch in "\"'\\" or unicodedata.category(ch) == "Cf"


def word(value: object) -> Placed:
    """``value`` as one word inside a line of a file (a URL in ``ExecStart=``, a comment)."""
    text = str(value)
    bad = unsafe_character(text) or next(
        (_described(ch) for ch in text if _not_in_a_line(ch)), None
    )
    if bad:
        raise RefusedValue(
            f"word: {_shown(text)} holds {bad}; a value inside a line of a file must be one "
            "word without quotes or backslashes"
        )
    return Placed(text)


def conf_string(value: object) -> Placed:
    """``value`` as ``"value"`` for a ``key="value"`` line (fleet.conf: no escapes there)."""
    text = str(value)
    bad = unsafe_character(text) or next((_described(ch) for ch in text if ch in '"\\'), None)
    if bad:
        raise RefusedValue(
            f"conf_string: {_shown(text)} holds {bad}; a quoted value of a config file "
            "cannot carry a quote, a backslash or a line break"
        )
    return Placed(f'"{text}"')


def _only_placed(value: Any) -> Any:
    """The finalize hook of config templates: what ``{{ … }}`` prints must be placed."""
    if isinstance(value, Placed):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise UnplacedValue(
        f"a value ({_shown(str(value))}) is printed as it is; pass it through "
        f"{PLACING_FILTERS}: yaml_scalar or tojson for a YAML or JSON value, word for one "
        'word inside a line of a file, conf_string for the value of a key="value" line'
    )


def _ipxe_value(value: Any) -> Any:
    """The finalize hook of kernel arguments: a value must fit in one iPXE word."""
    text = str(value)
    bad = ipxe_problem(text) or next((_described(ch) for ch in text if ch == "$"), None)
    if bad:
        raise RefusedValue(
            f"the value {_shown(text)} holds {bad}, which iPXE cannot carry in a kernel "
            "argument ('$' would be expanded as an iPXE setting)"
        )
    return value


def ipxe_problem(text: str) -> str | None:
    """What in ``text`` iPXE cannot carry in one word of a command line, or None."""
    return unsafe_character(text) or next(
        (_described(ch) for ch in text if ch.isspace() or ch == '"'), None
    )


def one_line(text: str) -> str:
    """``text`` for a comment line of a script: every unprintable character escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _described(ch: str) -> str:
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, 'a control character')})"


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _check_ipxe_word(text: str, what: str) -> None:
    bad = ipxe_problem(text)
    if bad:
        raise RenderError(
            f"{what} renders as {_shown(text)}, which holds {bad}: iPXE would read it as "
            "more than one argument, or not at all; write each argument as its own item"
        )


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
        self.config_env = self.env.overlay(finalize=_only_placed)
        self.args_env = self.env.overlay(finalize=_ipxe_value)

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
            _check_ipxe_word(arg, f"profile {profile.name!r}: kernel argument {given!r}")
        for arg in args[len(profile.args) :]:
            _check_ipxe_word(arg, f"profile {profile.name!r}: kernel argument {arg!r}")
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
            _check_ipxe_word(hostname, f"{node.mac}: hostname")  # echoed: one word
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
            _check_ipxe_word(text, f"profile {profile.name!r}: kernel or initrd {text!r}")
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

    def cloud_config(self, node: Node, profile: Profile, group: Group | None, base: str) -> str:
        """The node's cloud-config, validated. Raises :class:`RenderError` on any problem."""
        if not profile.cloud_config:
            raise RenderError(f"profile {profile.name!r} has no cloud_config template")
        variables = template_vars(node, profile, group, self.settings.cluster, self.urls(base))
        text = self.render_template(profile.cloud_config, variables)
        _, errors = cloudconfig.validate(text)
        if errors:
            raise RenderError(
                f"template {profile.cloud_config} rendered an invalid cloud-config for "
                f"{node.mac}: " + "; ".join(errors)
            )
        return text

    def ignition(self, node: Node, profile: Profile, group: Group | None, base: str) -> str:
        """The node's Ignition (spec 3) config, validated. Raises :class:`RenderError`."""
        if not profile.ignition:
            raise RenderError(f"profile {profile.name!r} has no ignition template")
        variables = template_vars(node, profile, group, self.settings.cluster, self.urls(base))
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
