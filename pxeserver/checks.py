"""``pxeserver check``: everything that can be verified before a machine boots.

Settings are validated when loaded (:mod:`pxeserver.config`); this module goes further:
every profile's iPXE script and cloud-config is rendered for a sample machine of each
group that uses it (BIOS and UEFI), and every local asset and boot loader is looked for.
Missing files are warnings (they may be fetched later); a template that fails is an error.
Where the real ``coreos-cloudinit`` is on the PATH, it validates every rendered
cloud-config too. The cluster's etcd (what nodes join) must be reachable by the nodes
(never loopback) and, where this host reaches it, serve the v2 API that fleet v1 speaks
(over TLS with the cluster's files when its URLs are https://). The store's etcd is asked
once: a TLS handshake it refuses is an error that names the file to fix; no answer at all
is a warning (it may be down now, or not reachable from here). URLs show without their
user and password.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .config import EtcdTls, Settings, peer_urls
from .config.settings import ServerSettings
from .errors import Problem, RenderError, StoreUnavailable
from .hints import command
from .logs import redact
from .model import MAC, Node, hostname_from_pattern
from .profiles import Decision, Group, Profile
from .render import engine
from .render.templates import Renderer
from .store import NodeStore

log = logging.getLogger(__name__)

SAMPLE_MAC = MAC.parse("52:54:00:00:00:01")
BOOT_LOADERS = ("undionly.kpxe", "ipxe.efi", "snponly.efi")


def default_base_url(settings: Settings) -> str:
    if settings.server.base_url:
        return settings.server.base_url
    host = settings.server.listen
    if host in ("0.0.0.0", "::"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return f"http://{host}:{settings.server.http_port}"


def _samples(settings: Settings, profile: Profile) -> Iterator[tuple[Node, Group | None]]:
    """A sample node for each group that selects ``profile`` (or one, if none does)."""
    groups: list[Group | None] = [g for g in settings.groups if g.profile == profile.name]
    if not groups:
        groups = [None]
    for group in groups:
        mac = SAMPLE_MAC
        labels: dict[str, str] = {}
        facts: dict[str, str] = {}
        for key, values in group.selectors.items() if group else ():
            if key == "mac":
                mac = MAC.parse(values[0])
            elif key in ("uuid", "arch", "platform", "hostname"):
                facts[key] = values[0]
            else:
                labels[key] = values[0]
        hostname = facts.get("hostname") or hostname_from_pattern(
            settings.cluster.hostname_pattern, 1, mac
        )
        yield (
            Node(
                mac=mac,
                hostname=hostname,
                uuid=facts.get("uuid"),
                arch=facts.get("arch", "x86_64"),
                ip="192.0.2.10",
                labels=labels,
                token="sample-token",
            ),
            group,
        )


def _render_problems(settings: Settings, renderer: Renderer, base: str) -> list[Problem]:
    problems = []
    for profile in settings.profiles.values():
        key = f"profiles.{profile.name}"
        for node, group in _samples(settings, profile):
            decision = Decision(profile.name, group, "check")
            who = f"group {group.name}" if group else "a sample node"
            for platform in ("pcbios", "efi"):
                try:
                    renderer.ipxe_script(node.replace(platform=platform), profile, decision, base)
                except RenderError as exc:
                    problems.append(
                        Problem(
                            settings.source,
                            f"{key}.args",
                            f"{exc} (for {who})",
                            "fix the kernel argument template",
                        )
                    )
                    break
            if profile.cloud_config:
                try:
                    text = renderer.cloud_config(node, profile, group, base)
                    problems += _engine_problems(settings, profile, text, who)
                except RenderError as exc:
                    problems.append(
                        Problem(
                            settings.source,
                            f"{key}.cloud_config",
                            f"{exc} (for {who})",
                            _template_fix(settings, profile.cloud_config),
                        )
                    )
            problems += _ignition_problems(settings, renderer, base, profile, node, group, who)
    return problems


def _engine_problems(settings: Settings, profile: Profile, text: str, who: str) -> list[Problem]:
    """What the real ``coreos-cloudinit -validate`` says of a rendered config, when it is
    on the PATH: a rejection is an error, a deprecation a warning."""
    binary = shutil.which(engine.ENGINE)
    if binary is None:
        return []
    key = f"profiles.{profile.name}.cloud_config"
    template = settings.paths.templates_dir / str(profile.cloud_config)
    try:
        entries = engine.engine_report(text, binary)
    except (OSError, RuntimeError) as exc:
        return [
            Problem(
                settings.source,
                key,
                f"{binary} did not run: {exc}",
                "fix or remove that binary (the one on the PATH)",
                warning=True,
            )
        ]
    return [
        Problem(
            settings.source,
            key,
            f"{engine.ENGINE} -validate: {entry} (for {who})",
            f"fix {template}" if entry.rejects else "the node's OS must still ship it",
            warning=not entry.rejects,
        )
        for entry in entries
    ]


def _ignition_problems(
    settings: Settings,
    renderer: Renderer,
    base: str,
    profile: Profile,
    node: Node,
    group: Group | None,
    who: str,
) -> list[Problem]:
    if not profile.ignition:
        return []
    try:
        renderer.ignition(node, profile, group, base)
    except RenderError as exc:
        return [
            Problem(
                settings.source,
                f"profiles.{profile.name}.ignition",
                f"{exc} (for {who})",
                _template_fix(settings, profile.ignition),
            )
        ]
    return []


def _template_fix(settings: Settings, name: str) -> str:
    path = Path(settings.paths.templates_dir) / name
    return f"fix {path}" if path.is_file() else f"write {path} or name a template that exists"


def _install_problems(settings: Settings, renderer: Renderer, base: str) -> list[Problem]:
    """A profile that installs to disk must phone home ``ready``: that is what records the
    install; without it every boot of the node reinstalls it (a boot loop)."""
    problems = []
    for profile in settings.profiles.values():
        if profile.install != "disk":
            continue
        node, group = next(_samples(settings, profile))
        ready_url = renderer.urls(base).api(node, "ready")
        texts = []
        for render, wanted in ((renderer.cloud_config, profile.cloud_config),
                               (renderer.ignition, profile.ignition)):  # fmt: skip
            if wanted:
                try:
                    texts.append(render(node, profile, group, base))
                except RenderError:
                    continue  # reported by _render_problems
        # Ignition carries files as data: URLs, percent-encoded
        if not any(ready_url in text or ready_url in unquote(text) for text in texts):
            problems.append(
                Problem(
                    settings.source,
                    f"profiles.{profile.name}.install",
                    "is disk, but the profile's config never phones home ready (no "
                    "{{ urls.ready }} in it), so the install is never recorded and the "
                    "node reinstalls at every boot",
                    "POST to {{ urls.ready | word }} once installed, as the shipped templates do, "
                    "or use install: ram",
                    warning=True,
                )
            )
    return problems


def _asset_problems(settings: Settings) -> list[Problem]:
    problems = []
    assets = settings.paths.assets_dir
    for profile in settings.profiles.values():
        for key, path in [("kernel", profile.kernel)] + [("initrd", i) for i in profile.initrds]:
            if "://" in path:
                continue
            if not (assets / path).is_file():
                problems.append(
                    Problem(
                        settings.source,
                        f"profiles.{profile.name}.{key}",
                        f"{assets / path} does not exist",
                        fetch_hint(settings, path),
                        warning=True,
                    )
                )
    return problems


def fetch_hint(settings: Settings, path: str) -> str:
    """How to get the asset ``path`` (relative to the assets folder): the command that
    fetches it, or why none can."""
    top = path.split("/", 1)[0]
    if top in ("flatcar", "flatcar-arm64"):
        arch = " --arch arm64" if top == "flatcar-arm64" else ""
        return f"fetch it: {command('assets fetch flatcar' + arch + _config(settings))}"
    if top == "coreos":
        return (
            "CoreOS Container Linux cannot be fetched: its images went offline with its end "
            "of life (2020); copy its PXE kernel and initrd there yourself, or boot Flatcar "
            f"({command('assets fetch flatcar' + _config(settings))})"
        )
    return "put the file there or fix the path"


def _config(settings: Settings) -> str:
    """`` --config FILE`` for a command that must use the same settings, if from a file."""
    source = settings.source
    return f" --config {source}" if source and not source.startswith("<") else ""


def _loader_problems(settings: Settings) -> list[Problem]:
    if not settings.server.tftp:
        return []
    root = Path(settings.paths.tftp_root)
    missing = [name for name in BOOT_LOADERS if not (root / name).is_file()]
    if not missing:
        return []
    what = f"{root} does not exist" if not root.is_dir() else f"{root} lacks {', '.join(missing)}"
    return [
        Problem(
            settings.source,
            "paths.tftp_root",
            what,
            f"run {command('assets ipxe' + _config(settings))} to copy the boot loaders from "
            "Debian's ipxe package",
            warning=True,
        )
    ]


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_context(tls: EtcdTls | None) -> ssl.SSLContext | None:
    """HTTPS to the cluster's etcd as the nodes speak it: their CA, their certificate."""
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca))
    if tls.cert is not None and tls.key is not None:
        context.load_cert_chain(tls.cert, tls.key)
    return context


def _etcd_v2(
    url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None
) -> tuple[bool, str] | None:
    """Whether the etcd at ``url`` serves the v2 API, and its version; None if it does
    not answer from here."""
    base = url.rstrip("/")
    try:
        with urllib.request.urlopen(base + "/version", timeout=timeout, context=context) as resp:
            version = str(json.loads(resp.read() or b"{}").get("etcdserver", "?"))
    except (OSError, ValueError):
        return None
    try:
        with urllib.request.urlopen(
            base + "/v2/keys/?quorum=false", timeout=timeout, context=context
        ):
            return True, version
    except urllib.error.HTTPError as exc:
        return exc.code != 404, version
    except OSError:
        return None


def _cluster_problems(settings: Settings) -> list[Problem]:
    """The etcd the nodes join: not loopback (a node's etcd proxy would forward to
    itself), and with the v2 API fleet v1 speaks wherever this host reaches it."""
    problems = []
    cluster = settings.cluster
    for key, urls in (("cluster.etcd_endpoints", cluster.etcd_endpoints),
                      ("cluster.etcd_peer_urls", peer_urls(cluster))):  # fmt: skip
        for url in urls:
            if _is_loopback(url):
                problems.append(
                    Problem(
                        settings.source,
                        key,
                        f"{redact(url)} is a loopback address: the nodes' etcd proxies and fleet "
                        "would talk to themselves",
                        "give the etcd cluster's address on the boot network",
                        warning=True,
                    )
                )
    context = _tls_context(cluster.etcd_tls)
    for url in cluster.etcd_endpoints:
        found = _etcd_v2(url, context=context)
        if found is not None and not found[0]:
            problems.append(
                Problem(
                    settings.source,
                    "cluster.etcd_endpoints",
                    f"the etcd at {redact(url)} (version {found[1]}) serves no v2 API, which fleet "
                    "v1 needs (the nodes' fleetd and etcd proxy speak only v2)",
                    "run etcd 3.4 or 3.5 with --enable-v2 (3.6 removed the v2 API)",
                    warning=True,
                )
            )
    return problems


def _store_problems(
    settings: Settings, make_store: Callable[[Settings], NodeStore]
) -> list[Problem]:
    """The store's etcd, asked once with its settings (TLS files included)."""
    if settings.store.backend != "etcd":
        return []
    store = make_store(settings)
    try:
        store.ping()
    except StoreUnavailable as exc:
        stats = getattr(store, "stats", {})
        refused = bool(stats.get("tls") or stats.get("refused"))
        return [
            Problem(
                settings.source,
                "store.etcd_endpoints",
                f"etcd does not take pxeserver's calls: {redact(str(exc))}",
                "fix what it names, then check again"
                if refused
                else "start etcd, or check from a host that reaches it",
                warning=not refused,
            )
        ]
    finally:
        store.close()
    return []


def check_settings(
    settings: Settings, make_store: Callable[[Settings], NodeStore] | None = None
) -> list[Problem]:
    """Every problem ``pxeserver check`` reports beyond what loading the settings found.
    With ``make_store`` (how the daemon opens the store), the store is asked once too: not
    at a server's start, which opens the store itself and says whether it answers."""
    problems: list[Problem] = []
    templates = settings.paths.templates_dir
    if not Path(templates).is_dir():
        problems.append(
            Problem(
                settings.source,
                "paths.templates_dir",
                f"{templates} is not a folder",
                "point it at your templates",
            )
        )
    renderer = Renderer(settings)
    problems += _render_problems(settings, renderer, default_base_url(settings))
    problems += _install_problems(settings, renderer, default_base_url(settings))
    problems += _asset_problems(settings)
    problems += _loader_problems(settings)
    problems += _cluster_problems(settings)
    if make_store is not None:
        problems += _store_problems(settings, make_store)
    return problems


def start_report(settings: Settings, problems: list[Problem]) -> str:
    """The block ``serve`` logs at start: what will fail, one line each, with the fix."""
    lines = [
        f"{settings.source}: {len(problems)} problem{'s' if len(problems) > 1 else ''} "
        f"found at start (`{command('check' + _config(settings))}` lists them too):"
    ]
    for p in problems:
        lines.append(f"  {p.key}: {'' if p.warning else 'error: '}{p.what} — {p.fix}")
    return "\n".join(lines)


def log_write_policy(s: ServerSettings) -> None:
    """Say at start who may change nodes over HTTP (:func:`pxeserver.web.context.write_policy`;
    here, not in pxeserver.web, so that the main process does not import Flask)."""
    if s.api_token is not None:
        log.info("changes over HTTP need the API token (server.api_token)")
    elif s.allow_unauthenticated_writes:
        log.warning("no api_token is set and server.allow_unauthenticated_writes is on: anyone "
                    "who reaches port %d can change and forget nodes", s.http_port)  # fmt: skip
    else:
        log.info("no api_token is set: nodes can be changed over HTTP from this machine "
                    "(loopback) only; set server.api_token (or PXESERVER_API_TOKEN) to change "
                    "them from elsewhere")  # fmt: skip
