"""Settings: one YAML file, validated once at start into a frozen :class:`Settings`.

Only this module reads settings files and the environment. Every problem is collected
(not just the first) and reported as ``FILE: KEY: what is wrong — how to fix``.

Precedence, lowest first: built-in defaults, the settings file, ``PXESERVER_API_TOKEN``
from the environment, command-line flags. Relative paths in the file are relative to
the file's folder; relative paths from flags or defaults are relative to the current
folder, except that the shipped ``cloud-configs/`` and ``tftproot/`` are found next to
the package when the current folder has none.
"""

from __future__ import annotations

import ipaddress
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .errors import ConfigError, InvalidInput, Problem
from .model import MAC, label_name_problem, label_value_problem, unsafe_character
from .profiles import INSTALL_MODES, Group, Profile

DEFAULTS_SOURCE = "<built-in defaults>"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

UEFI_LOADERS = ("snponly.efi", "ipxe.efi")
TRANSPORTS = ("http", "tftp")
BACKENDS = ("sqlite", "etcd")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class ServerSettings:
    listen: str = "0.0.0.0"
    interface: str | None = None  # bind to this interface's address; wins over listen
    http_port: int = 8080
    tftp_port: int = 69
    dhcp_port: int = 67
    pxe_port: int = 4011
    dhcp: bool = True
    tftp: bool = True
    base_url: str | None = None  # what machines are told; default: the address they asked
    api_token: str | None = None  # bearer token for writes to the API; None: writes open
    http_workers: int = 2
    # Serve /assets/ (kernels, initrds) from granian's own static file handler instead of
    # Flask: no Python per byte. It has no Range requests and no ETag (docs/BENCHMARKS.md).
    static_assets: bool = False
    user: str | None = None  # drop to this user after binding privileged ports
    uefi_loader: str = "snponly.efi"
    exclude_macs: frozenset[MAC] = frozenset()
    log_format: str = "text"
    log_level: str = "INFO"


@dataclass(frozen=True)
class LimitSettings:
    """What one client, or a flood, can make the UDP services do (docs/RELIABILITY.md)."""

    tftp_sessions: int = 1024  # TFTP transfers at once, all clients together
    tftp_sessions_per_client: int = 4  # TFTP transfers at once from one address
    tftp_requests_per_client: int = 10  # new TFTP requests a second from one address (×2 burst)
    new_macs_per_second: int = 20  # sightings of MACs not in the registry written a second


@dataclass(frozen=True)
class PathSettings:
    data_dir: Path = Path("var")
    assets_dir: Path = Path("assets")
    tftp_root: Path = Path("tftproot")
    templates_dir: Path = Path("cloud-configs")


@dataclass(frozen=True)
class StoreSettings:
    backend: str = "sqlite"
    etcd_endpoints: tuple[str, ...] = ()
    etcd_prefix: str = "/pxeserver/"
    timeout: float = 3.0  # deadline of every store call, seconds


@dataclass(frozen=True)
class ClusterSettings:
    etcd_endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)  # what nodes join
    # Peer URLs for the nodes' etcd proxies; default: the client URLs on port 2380.
    etcd_peer_urls: tuple[str, ...] = ()
    fleet_metadata: Mapping[str, str] = field(default_factory=dict)
    ssh_authorized_keys: tuple[str, ...] = ()
    hostname_pattern: str = "node-{index:03d}"
    domain: str | None = None
    heartbeat_interval: int = 30
    heartbeat_ttl: int = 90  # a ready node silent this long is lost
    boot_timeout: int = 900  # a booting/configured node silent this long is lost
    events_kept: int = 50


def peer_urls(cluster: ClusterSettings) -> tuple[str, ...]:
    """The cluster's etcd peer URLs: as configured, else the client URLs on port 2380."""
    if cluster.etcd_peer_urls:
        return cluster.etcd_peer_urls
    urls = []
    for url in cluster.etcd_endpoints:
        parts = urlsplit(url)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        urls.append(f"{parts.scheme}://{host}:2380")
    return tuple(urls)


FLATCAR_BASE_URL = "https://{channel}.release.flatcar-linux.net/{arch}-usr/"
FLATCAR_KEY = Path(__file__).resolve().parent / "keys" / "flatcar-image-signing-key.asc"
# The primary key of "Flatcar Buildbot (Official Builds) <buildbot@flatcar-linux.org>".
FLATCAR_FINGERPRINT = "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A"


@dataclass(frozen=True)
class FlatcarSettings:
    """Where ``pxeserver assets fetch flatcar`` downloads from and whom it trusts."""

    base_url: str = FLATCAR_BASE_URL  # {channel} and {arch} are filled in; then <version>/
    signing_key: Path = FLATCAR_KEY  # OpenPGP public key(s), armored or binary
    fingerprints: tuple[str, ...] = (FLATCAR_FINGERPRINT,)  # primary keys trusted to sign


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    paths: PathSettings = field(default_factory=PathSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    groups: tuple[Group, ...] = ()
    source: str = DEFAULTS_SOURCE
    flatcar: FlatcarSettings = field(default_factory=FlatcarSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)

    @property
    def sqlite_path(self) -> Path:
        return self.paths.data_dir / "pxeserver.db"


# The example profiles served when there is no settings file. The kernels are fetched
# with `pxeserver assets fetch flatcar`; CoreOS Container Linux images are no longer
# published, so its profile expects them under assets/coreos/ from the operator.
DEFAULT_RAW: dict[str, Any] = {
    "profiles": {
        "flatcar": {
            "kernel": "flatcar/current/flatcar_production_pxe.vmlinuz",
            "initrd": ["flatcar/current/flatcar_production_pxe_image.cpio.gz"],
            "args": ["flatcar.first_boot=1", "console=tty0", "console=ttyS0,115200n8"],
            "cloud_config": "flatcar.yaml.j2",
        },
        "coreos": {
            "kernel": "coreos/coreos_production_pxe.vmlinuz",
            "initrd": ["coreos/coreos_production_pxe_image.cpio.gz"],
            "args": ["coreos.autologin", "console=tty0", "console=ttyS0,115200n8"],
            "cloud_config": "coreos.yaml.j2",
        },
    },
    "groups": [{"name": "default", "profile": "flatcar"}],
}


class _Checker:
    """Reads a raw mapping section by section, collecting problems instead of stopping."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def problem(self, key: str, what: str, fix: str, *, warning: bool = False) -> None:
        self.problems.append(Problem(self.source, key, what, fix, warning))

    def section(self, raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(key, f"is a {type(value).__name__}", "write it as a mapping of keys")
            return {}
        return value

    def unknown(self, raw: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
        for key in raw:
            if key not in known:
                path = f"{where}.{key}" if where else str(key)
                self.problem(path, "is not a known setting", f"use one of: {', '.join(known)}")

    def str_(self, raw: Mapping[str, Any], key: str, where: str, default: Any) -> Any:
        value = raw.get(key, default)
        if value is None or isinstance(value, str):
            return value
        self.problem(f"{where}.{key}", f"is {value!r}", "write it as a string")
        return default

    def int_(
        self, raw: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int
    ) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.problem(f"{where}.{key}", f"is {value!r}", f"use a whole number from {lo} to {hi}")
            return default
        return value

    def bool_(self, raw: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.problem(f"{where}.{key}", f"is {value!r}", "write true or false")
            return default
        return value

    def choice(
        self, raw: Mapping[str, Any], key: str, where: str, default: str, options: tuple[str, ...]
    ) -> str:
        value = raw.get(key, default)
        if value not in options:
            self.problem(f"{where}.{key}", f"is {value!r}", f"use one of: {', '.join(options)}")
            return default
        return str(value)

    def str_list(self, raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.problem(f"{where}.{key}", f"is {value!r}", "write a string or a list of strings")
        return None

    def text(self, value: Any, where: str) -> None:
        """Every string in ``value`` (a metadata tree, a list) is one line: no control
        characters or line separators, which would reach templates and scripts."""
        if isinstance(value, str):
            bad = unsafe_character(value)
            if bad:
                self.problem(where, f"holds {bad}", "write it on one line, without it")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                self.text(key, where)
                self.text(item, f"{where}.{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.text(item, f"{where}[{i}]")

    def path(self, raw: Mapping[str, Any], key: str, where: str, base: Path | None) -> Path | None:
        value = self.str_(raw, key, where, None)
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() or base is None else base / p


def _url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL with a host"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "has a bad port"
    return None


def _pattern_problem(pattern: str) -> str | None:
    allowed = {"index", "mac", "mac_hex", "mac_suffix"}
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        return f"is not a valid pattern ({exc})"
    for name in fields:
        if name not in allowed:
            return f"uses {{{name}}}"
    try:
        sample = hostname_from_pattern(pattern, 7, MAC.parse("52:54:00:12:34:56"))
    except (ValueError, KeyError, IndexError) as exc:
        return f"does not format ({exc})"
    if not _valid_hostname(sample):
        return f"gives {sample!r}, which is not a valid hostname"
    if not {"index", "mac", "mac_hex", "mac_suffix"} & set(fields):
        return "gives every node the same name"
    return None


def hostname_from_pattern(pattern: str, index: int, mac: MAC) -> str:
    return pattern.format(index=index, mac=mac.hex, mac_hex=mac.hex, mac_suffix=mac.hex[6:])


def _valid_hostname(name: str) -> bool:
    if not 0 < len(name) <= 63:
        return False
    ok = set(string.ascii_lowercase + string.digits + "-")
    return set(name) <= ok and not name.startswith("-") and not name.endswith("-")


def valid_hostname(name: str) -> bool:
    """A single DNS label in lower case: what a hostname pattern or an operator may set."""
    return _valid_hostname(name)


def _server(c: _Checker, raw: Mapping[str, Any]) -> ServerSettings:
    w = "server"
    known = tuple(ServerSettings.__dataclass_fields__)
    c.unknown(raw, known, w)
    d = ServerSettings()
    listen = c.str_(raw, "listen", w, d.listen)
    try:
        ipaddress.ip_address(listen)
    except ValueError:
        c.problem(f"{w}.listen", f"is {listen!r}", "write an IP address such as 0.0.0.0")
        listen = d.listen
    base_url = c.str_(raw, "base_url", w, None)
    if base_url is not None:
        why = _url_problem(base_url)
        if why:
            c.problem(f"{w}.base_url", why, "write e.g. http://192.0.2.1:8080")
            base_url = None
        else:
            base_url = base_url.rstrip("/")
    excluded: set[MAC] = set()
    for text in c.str_list(raw, "exclude_macs", w) or ():
        try:
            excluded.add(MAC.parse(text))
        except InvalidInput as exc:
            c.problem(f"{w}.exclude_macs", str(exc), "fix or remove that entry")
    return ServerSettings(
        listen=listen,
        interface=c.str_(raw, "interface", w, None),
        http_port=c.int_(raw, "http_port", w, d.http_port, 0, 65535),
        tftp_port=c.int_(raw, "tftp_port", w, d.tftp_port, 0, 65535),
        dhcp_port=c.int_(raw, "dhcp_port", w, d.dhcp_port, 0, 65535),
        pxe_port=c.int_(raw, "pxe_port", w, d.pxe_port, 0, 65535),
        dhcp=c.bool_(raw, "dhcp", w, d.dhcp),
        tftp=c.bool_(raw, "tftp", w, d.tftp),
        base_url=base_url,
        api_token=_secret(c, raw, "api_token", w),
        http_workers=c.int_(raw, "http_workers", w, d.http_workers, 1, 64),
        static_assets=c.bool_(raw, "static_assets", w, d.static_assets),
        user=c.str_(raw, "user", w, None),
        uefi_loader=c.choice(raw, "uefi_loader", w, d.uefi_loader, UEFI_LOADERS),
        exclude_macs=frozenset(excluded),
        log_format=c.choice(raw, "log_format", w, d.log_format, LOG_FORMATS),
        log_level=c.choice(raw, "log_level", w, d.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")),
    )


def _secret(c: _Checker, raw: Mapping[str, Any], key: str, where: str) -> str | None:
    """A secret setting: like a string, but an error never shows its value (errors are
    printed and logged)."""
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value or None
    c.problem(
        f"{where}.{key}",
        f"is a {type(value).__name__}, not a string (the value is not shown: it is a secret)",
        'quote it: api_token: "…"',
    )
    return None


def _shipped(name: str) -> Path:
    """A shipped folder: ./NAME if the current folder has one, else the checkout's."""
    here = Path(name)
    if here.is_dir() or not (PROJECT_ROOT / name).is_dir():
        return here
    return PROJECT_ROOT / name


def _limits(c: _Checker, raw: Mapping[str, Any]) -> LimitSettings:
    w = "limits"
    c.unknown(raw, tuple(LimitSettings.__dataclass_fields__), w)
    d = LimitSettings()
    return LimitSettings(
        tftp_sessions=c.int_(raw, "tftp_sessions", w, d.tftp_sessions, 1, 65536),
        tftp_sessions_per_client=c.int_(
            raw, "tftp_sessions_per_client", w, d.tftp_sessions_per_client, 1, 65536
        ),
        tftp_requests_per_client=c.int_(
            raw, "tftp_requests_per_client", w, d.tftp_requests_per_client, 1, 1_000_000
        ),
        new_macs_per_second=c.int_(
            raw, "new_macs_per_second", w, d.new_macs_per_second, 1, 1_000_000
        ),
    )


def _paths(c: _Checker, raw: Mapping[str, Any], base: Path | None) -> PathSettings:
    w = "paths"
    c.unknown(raw, tuple(PathSettings.__dataclass_fields__), w)
    return PathSettings(
        data_dir=c.path(raw, "data_dir", w, base) or Path("var"),
        assets_dir=c.path(raw, "assets_dir", w, base) or Path("assets"),
        tftp_root=c.path(raw, "tftp_root", w, base) or _shipped("tftproot"),
        templates_dir=c.path(raw, "templates_dir", w, base) or _shipped("cloud-configs"),
    )


def _store(c: _Checker, raw: Mapping[str, Any]) -> StoreSettings:
    w = "store"
    c.unknown(raw, ("backend", "etcd_endpoints", "etcd_prefix", "timeout"), w)
    endpoints = c.str_list(raw, "etcd_endpoints", w) or ()
    for url in endpoints:
        why = _url_problem(url)
        if why:
            c.problem(f"{w}.etcd_endpoints", f"{url!r} {why}", "write e.g. http://127.0.0.1:2379")
    backend = c.choice(raw, "backend", w, "etcd" if endpoints else "sqlite", BACKENDS)
    if backend == "etcd" and not endpoints:
        c.problem(
            f"{w}.etcd_endpoints", "is empty but the backend is etcd", "list the etcd client URLs"
        )
    prefix = c.str_(raw, "etcd_prefix", w, "/pxeserver/")
    if not prefix.startswith("/") or not prefix.endswith("/"):
        c.problem(f"{w}.etcd_prefix", f"is {prefix!r}", "begin and end it with /")
        prefix = "/pxeserver/"
    timeout = raw.get("timeout", 3.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0.1:
        c.problem(f"{w}.timeout", f"is {timeout!r}", "give the deadline in seconds, e.g. 3")
        timeout = 3.0
    return StoreSettings(backend, endpoints, prefix, float(timeout))


def _cluster(c: _Checker, raw: Mapping[str, Any]) -> ClusterSettings:
    w = "cluster"
    c.unknown(raw, tuple(ClusterSettings.__dataclass_fields__), w)
    d = ClusterSettings()
    endpoints = c.str_list(raw, "etcd_endpoints", w)
    for url in endpoints or ():
        why = _url_problem(url)
        if why:
            c.problem(f"{w}.etcd_endpoints", f"{url!r} {why}", "write e.g. http://10.0.0.1:2379")
    peers = c.str_list(raw, "etcd_peer_urls", w)
    for url in peers or ():
        why = _url_problem(url)
        if why:
            c.problem(f"{w}.etcd_peer_urls", f"{url!r} {why}", "write e.g. http://10.0.0.1:2380")
    pattern = c.str_(raw, "hostname_pattern", w, d.hostname_pattern)
    why = _pattern_problem(pattern)
    if why:
        c.problem(
            f"{w}.hostname_pattern",
            f"{pattern!r} {why}",
            "use {index}, {mac_hex} or {mac_suffix}, e.g. node-{index:03d}",
        )
        pattern = d.hostname_pattern
    metadata = {str(k): str(v) for k, v in c.section(raw, "fleet_metadata").items()}
    for key, value in metadata.items():
        why = label_name_problem(key) or label_value_problem(value)
        if why:
            where = f"{w}.fleet_metadata" + ("" if label_name_problem(key) else f".{key}")
            c.problem(where, why, "fleet metadata follows the rules of node labels")
    keys = c.str_list(raw, "ssh_authorized_keys", w) or ()
    c.text(keys, f"{w}.ssh_authorized_keys")
    domain = c.str_(raw, "domain", w, None)
    c.text(domain, f"{w}.domain")
    return ClusterSettings(
        etcd_endpoints=endpoints if endpoints is not None else d.etcd_endpoints,
        etcd_peer_urls=peers or (),
        fleet_metadata=metadata,
        ssh_authorized_keys=keys,
        hostname_pattern=pattern,
        domain=domain,
        heartbeat_interval=c.int_(raw, "heartbeat_interval", w, d.heartbeat_interval, 1, 3600),
        heartbeat_ttl=c.int_(raw, "heartbeat_ttl", w, d.heartbeat_ttl, 1, 86400),
        boot_timeout=c.int_(raw, "boot_timeout", w, d.boot_timeout, 1, 86400),
        events_kept=c.int_(raw, "events_kept", w, d.events_kept, 5, 1000),
    )


_PROFILE_KEYS = (
    "kernel",
    "initrd",
    "args",
    "cloud_config",
    "ignition",
    "transport",
    "install",
    "metadata",
)
# The key `install` replaced; still read, with a warning that says what to write.
_OLD_INSTALL_KEY = "boot_from_disk_when_ready"


def _install(c: _Checker, body: Mapping[str, Any], where: str) -> str:
    """``install: ram`` (the default: PXE-only, network-boots every time) or ``disk``."""
    install = c.choice(body, "install", where, "ram", INSTALL_MODES)
    if _OLD_INSTALL_KEY in body:
        old = c.bool_(body, _OLD_INSTALL_KEY, where, False)
        c.problem(
            f"{where}.{_OLD_INSTALL_KEY}",
            "is the old name of install",
            f"write install: {'disk' if old else 'ram'} instead",
            warning=True,
        )
        if old and "install" not in body:
            install = "disk"
    return install


def _profiles(c: _Checker, raw: Mapping[str, Any]) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for name, body in raw.items():
        w = f"profiles.{name}"
        if not isinstance(body, Mapping):
            c.problem(w, "is not a mapping", "give kernel, initrd, args and cloud_config")
            continue
        c.unknown({k: v for k, v in body.items() if k != _OLD_INSTALL_KEY}, _PROFILE_KEYS, w)
        kernel = c.str_(body, "kernel", w, None)
        if not kernel:
            c.problem(f"{w}.kernel", "is missing", "name the kernel file under the assets folder")
            continue
        args = body.get("args", [])
        if isinstance(args, str):
            args = args.split()
        if not isinstance(args, list) or not all(isinstance(a, (str, int)) for a in args):
            c.problem(f"{w}.args", f"is {args!r}", "write a list of kernel arguments")
            args = []
        c.text(body.get("metadata"), f"{w}.metadata")
        profiles[str(name)] = Profile(
            name=str(name),
            kernel=kernel,
            initrds=c.str_list(body, "initrd", w) or (),
            args=tuple(str(a) for a in args),
            cloud_config=c.str_(body, "cloud_config", w, None),
            ignition=c.str_(body, "ignition", w, None),
            transport=c.choice(body, "transport", w, "http", TRANSPORTS),
            install=_install(c, body, w),
            metadata=dict(c.section(body, "metadata")),
        )
    return profiles


def _selector_values(c: _Checker, key: str, value: Any, where: str) -> tuple[str, ...] | None:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
        c.problem(where, f"is {value!r}", "write a string or a list of strings")
        return None
    out = []
    for v in values:
        text = str(v)
        bad = unsafe_character(text)
        if bad:
            c.problem(where, f"holds {bad}", "write it on one line, without it")
            return None
        if key == "mac":
            try:
                text = MAC.parse(text).value
            except InvalidInput as exc:
                c.problem(where, str(exc), "fix the MAC address")
                return None
        elif key in ("uuid", "arch", "platform", "hostname"):
            text = text.strip().lower()
        out.append(text)
    return tuple(out)


def _groups(c: _Checker, raw: Any, profiles: Mapping[str, Profile]) -> tuple[Group, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        c.problem("groups", "is not a list", "write groups as a list of mappings")
        return ()
    groups: list[Group] = []
    seen: dict[str, int] = {}
    default: str | None = None
    for i, body in enumerate(raw):
        w = f"groups[{i}]"
        if not isinstance(body, Mapping):
            c.problem(w, "is not a mapping", "give name, profile and selectors")
            continue
        c.unknown(body, ("name", "profile", "selectors", "metadata"), w)
        name = str(body.get("name") or f"group-{i}")
        w = f"groups[{i}] ({name})"
        if name in seen:
            c.problem(
                w,
                f"has the same name as groups[{seen[name]}]",
                "give every group a name of its own",
            )
        seen[name] = i
        profile = body.get("profile")
        if not isinstance(profile, str) or profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none defined"
            c.problem(
                f"{w}.profile", f"names {profile!r}, which is not a profile", f"use one of: {known}"
            )
            continue
        raw_selectors = c.section(body, "selectors")
        selectors: dict[str, tuple[str, ...]] = {}
        for key, value in raw_selectors.items():
            values = _selector_values(c, str(key), value, f"{w}.selectors.{key}")
            if values is not None:
                selectors[str(key)] = values
        c.text(body.get("metadata"), f"{w}.metadata")
        group = Group(name, profile, selectors, dict(c.section(body, "metadata")))
        if group.is_default:
            if default is not None:
                c.problem(
                    w,
                    f"is a second default group (no selectors), beside {default!r}",
                    "give one of them selectors or remove it",
                )
                continue
            default = name
        groups.append(group)
    return tuple(groups)


def _flatcar(c: _Checker, raw: Mapping[str, Any], base: Path | None) -> FlatcarSettings:
    w = "flatcar"
    c.unknown(raw, ("base_url", "signing_key", "fingerprints"), w)
    d = FlatcarSettings()
    url = c.str_(raw, "base_url", w, d.base_url)
    if _url_problem(url.replace("{channel}", "stable").replace("{arch}", "amd64")):
        c.problem(f"{w}.base_url", f"{url!r} is not an http(s) URL", f"write e.g. {d.base_url}")
        url = d.base_url
    fingerprints = []
    for text in c.str_list(raw, "fingerprints", w) or d.fingerprints:
        fpr = text.replace(" ", "").upper()
        if not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", fpr):
            c.problem(
                f"{w}.fingerprints", f"{text!r} is not a key fingerprint", "give 40 hex digits"
            )
        fingerprints.append(fpr)
    return FlatcarSettings(
        base_url=url if url.endswith("/") else url + "/",
        signing_key=c.path(raw, "signing_key", w, base) or d.signing_key,
        fingerprints=tuple(fingerprints),
    )


def parse(raw: Mapping[str, Any], source: str, base: Path | None) -> tuple[Settings, list[Problem]]:
    """Validate a raw settings mapping. Returns the settings and every problem found."""
    c = _Checker(source)
    c.unknown(
        raw,
        ("server", "paths", "store", "cluster", "profiles", "groups", "flatcar", "limits"),
        "",
    )
    raw_profiles = c.section(raw, "profiles")
    if not raw_profiles:
        raw_profiles = DEFAULT_RAW["profiles"]
    profiles = _profiles(c, raw_profiles)
    raw_groups = raw.get("groups", DEFAULT_RAW["groups"] if "profiles" not in raw else None)
    groups = _groups(c, raw_groups, profiles)
    if not groups:
        c.problem(
            "groups",
            "no group selects a profile",
            "add a group, e.g. {name: default, profile: X}",
            warning=True,
        )
    settings = Settings(
        server=_server(c, c.section(raw, "server")),
        paths=_paths(c, c.section(raw, "paths"), base),
        store=_store(c, c.section(raw, "store")),
        cluster=_cluster(c, c.section(raw, "cluster")),
        profiles=profiles,
        groups=groups,
        source=source,
        flatcar=_flatcar(c, c.section(raw, "flatcar"), base),
        limits=_limits(c, c.section(raw, "limits")),
    )
    return settings, c.problems


def _merge(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``{"server.http_port": 8081}``-style overrides onto a raw mapping."""
    merged = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            target = merged[section] = {}
        target[key] = value
    return merged


def read_raw(path: Path | None) -> tuple[dict[str, Any], str, Path | None]:
    """The raw mapping of a settings file (or of no file), its name, and its folder."""
    if path is None:
        return {}, DEFAULTS_SOURCE, None
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [Problem(source, "-", f"cannot be read ({exc.strerror})", "check the path")]
        ) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        raise ConfigError(
            [
                Problem(
                    source,
                    where,
                    f"is not valid YAML ({getattr(exc, 'problem', exc)})",
                    "fix the syntax at that line",
                )
            ]
        ) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            [Problem(source, "-", "is not a mapping", "start with server:, profiles: …")]
        )
    return raw, source, path.resolve().parent


def load(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, list[Problem]]:
    """Load and validate settings. Raises :class:`ConfigError` if anything is wrong.

    Returns the settings with the warnings (problems that do not stop the server).
    """
    raw, source, base = read_raw(path)
    env = os.environ if environ is None else environ
    merged = dict(overrides or {})
    token = env.get("PXESERVER_API_TOKEN")
    if token and "server.api_token" not in merged:
        merged["server.api_token"] = token
    settings, problems = parse(_merge(raw, merged), source, base)
    errors = [p for p in problems if not p.warning]
    if errors:
        raise ConfigError(problems)
    return settings, problems
