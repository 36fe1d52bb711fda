"""The sections of the settings file but profiles and groups: server, limits, paths,
store, cluster and flatcar, each read and checked into its settings dataclass."""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import InvalidInput
from ..fetchsecret import FROM as FETCH_FROM
from ..model import (
    HOSTNAME_FIELDS,
    MAC,
    hostname_from_pattern,
    label_name_problem,
    label_value_problem,
    valid_hostname,
)
from .checker import Checker, url_problem
from .settings import (
    BACKENDS,
    LOG_FORMATS,
    PROJECT_ROOT,
    UEFI_LOADERS,
    ClusterSettings,
    FlatcarSettings,
    LimitSettings,
    PathSettings,
    ServerSettings,
    StoreSettings,
)
from .tls import etcd_tls


def _pattern_problem(pattern: str) -> str | None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        return f"is not a valid pattern ({exc})"
    for name in fields:
        if name not in HOSTNAME_FIELDS:
            return f"uses {{{name}}}"
    try:
        sample = hostname_from_pattern(pattern, 7, MAC.parse("52:54:00:12:34:56"))
    except (ValueError, KeyError, IndexError) as exc:
        return f"does not format ({exc})"
    if not valid_hostname(sample):
        return f"gives {sample!r}, which is not a valid hostname"
    if not set(HOSTNAME_FIELDS) & set(fields):
        return "gives every node the same name"
    return None


def server(c: Checker, raw: Mapping[str, Any]) -> ServerSettings:
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
        why = url_problem(base_url)
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
        allow_unauthenticated_writes=c.bool_(
            raw, "allow_unauthenticated_writes", w, d.allow_unauthenticated_writes
        ),
        config_fetch_window=c.int_(raw, "config_fetch_window", w, d.config_fetch_window, 10, 86400),
        config_fetch_from=c.choice(raw, "config_fetch_from", w, d.config_fetch_from, FETCH_FROM),
        config_fetch_key=_secret(c, raw, "config_fetch_key", w),
        http_workers=c.int_(raw, "http_workers", w, d.http_workers, 1, 64),
        static_assets=c.bool_(raw, "static_assets", w, d.static_assets),
        user=c.str_(raw, "user", w, None),
        uefi_loader=c.choice(raw, "uefi_loader", w, d.uefi_loader, UEFI_LOADERS),
        exclude_macs=frozenset(excluded),
        log_format=c.choice(raw, "log_format", w, d.log_format, LOG_FORMATS),
        log_level=c.choice(raw, "log_level", w, d.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")),
    )


def _secret(c: Checker, raw: Mapping[str, Any], key: str, where: str) -> str | None:
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


def limits(c: Checker, raw: Mapping[str, Any]) -> LimitSettings:
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
        never_booted=c.int_(raw, "never_booted", w, d.never_booted, 10, 10_000_000),
        http_connections=c.int_(raw, "http_connections", w, d.http_connections, 16, 1_000_000),
        http_header_timeout=c.int_(raw, "http_header_timeout", w, d.http_header_timeout, 1, 3600),
        http_requests_per_client=c.int_(
            raw, "http_requests_per_client", w, d.http_requests_per_client, 1, 10_000
        ),
    )


def paths(c: Checker, raw: Mapping[str, Any], base: Path | None) -> PathSettings:
    w = "paths"
    c.unknown(raw, tuple(PathSettings.__dataclass_fields__), w)
    return PathSettings(
        data_dir=c.path(raw, "data_dir", w, base) or Path("var"),
        assets_dir=c.path(raw, "assets_dir", w, base) or Path("assets"),
        tftp_root=c.path(raw, "tftp_root", w, base) or _shipped("tftproot"),
        templates_dir=c.path(raw, "templates_dir", w, base) or _shipped("cloud-configs"),
    )


TLS_KEYS = ("etcd_ca", "etcd_cert", "etcd_key")


def store(c: Checker, raw: Mapping[str, Any], base: Path | None) -> StoreSettings:
    w = "store"
    c.unknown(raw, ("backend", "etcd_endpoints", "etcd_prefix", "timeout", *TLS_KEYS), w)
    endpoints = c.str_list(raw, "etcd_endpoints", w) or ()
    for url in endpoints:
        why = url_problem(url)
        if why:
            c.problem(f"{w}.etcd_endpoints", f"{url!r} {why}", "write e.g. http://127.0.0.1:2379")
        elif urlsplit(url).username is not None:
            c.problem(
                f"{w}.etcd_endpoints",
                f"{url} carries a user and password, which pxeserver does not send: it "
                "authenticates to etcd with a client certificate",
                "remove them from the URL; set store.etcd_cert and store.etcd_key",
                warning=True,
            )
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
    tls = etcd_tls(c, raw, w, base, endpoints)
    return StoreSettings(backend, endpoints, prefix, float(timeout), tls)


def cluster(c: Checker, raw: Mapping[str, Any], base: Path | None) -> ClusterSettings:
    w = "cluster"
    settings = tuple(f for f in ClusterSettings.__dataclass_fields__ if f != "etcd_tls")
    c.unknown(raw, (*settings, *TLS_KEYS), w)
    d = ClusterSettings()
    endpoints = c.str_list(raw, "etcd_endpoints", w)
    for url in endpoints or ():
        why = url_problem(url)
        if why:
            c.problem(f"{w}.etcd_endpoints", f"{url!r} {why}", "write e.g. http://10.0.0.1:2379")
    peers = c.str_list(raw, "etcd_peer_urls", w)
    for url in peers or ():
        why = url_problem(url)
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
    endpoints = endpoints if endpoints is not None else d.etcd_endpoints
    # The nodes' etcd proxy reaches the members' peer URLs and client URLs alike.
    tls = etcd_tls(c, raw, w, base, (*endpoints, *(peers or ())))
    return ClusterSettings(
        etcd_endpoints=endpoints,
        etcd_peer_urls=peers or (),
        etcd_tls=tls,
        fleet_metadata=metadata,
        ssh_authorized_keys=keys,
        hostname_pattern=pattern,
        domain=domain,
        heartbeat_interval=c.int_(raw, "heartbeat_interval", w, d.heartbeat_interval, 1, 3600),
        heartbeat_ttl=c.int_(raw, "heartbeat_ttl", w, d.heartbeat_ttl, 1, 86400),
        boot_timeout=c.int_(raw, "boot_timeout", w, d.boot_timeout, 1, 86400),
        events_kept=c.int_(raw, "events_kept", w, d.events_kept, 5, 1000),
    )


def flatcar(c: Checker, raw: Mapping[str, Any], base: Path | None) -> FlatcarSettings:
    w = "flatcar"
    c.unknown(raw, ("base_url", "signing_key", "fingerprints"), w)
    d = FlatcarSettings()
    url = c.str_(raw, "base_url", w, d.base_url)
    if url_problem(url.replace("{channel}", "stable").replace("{arch}", "amd64")):
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
