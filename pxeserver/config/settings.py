"""The settings: frozen dataclasses, one per section of the settings file, with their
defaults, and the example profiles served when there is no settings file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..model import MAC
from ..profiles import Group, Profile

DEFAULTS_SOURCE = "<built-in defaults>"
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout

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
    # What machines are told; default: the address they asked, if it is one of this
    # host's, else the listening address (see pxeserver.web.context.base_url).
    base_url: str | None = None
    api_token: str | None = None  # bearer token for writes to the API
    # Without api_token, writes are accepted from this machine (loopback) only; True
    # accepts them from anyone who reaches the HTTP port (docs/SECURITY.md).
    allow_unauthenticated_writes: bool = False
    # A machine's config is handed out once per boot, for the one-time secret in its
    # script's config URL (docs/SECURITY.md): within this many seconds of the script,
    config_fetch_window: int = 600
    # asked from (pxeserver.fetchsecret.FROM): "network", the network of the address that
    # fetched the script (an OS whose DHCP lease differs from its firmware's: the usual
    # case); "address", that address only; "anywhere" (NAT, relays that hide machines),
    config_fetch_from: str = "network"
    # under this key; default: one made into <data_dir>/fetch.key (mode 0600).
    config_fetch_key: str | None = None
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
    """What one client, or a flood, can make the services do (docs/RELIABILITY.md,
    docs/SECURITY.md)."""

    tftp_sessions: int = 1024  # TFTP transfers at once, all clients together
    tftp_sessions_per_client: int = 4  # TFTP transfers at once from one address
    tftp_requests_per_client: int = 10  # new TFTP requests a second from one address (×2 burst)
    new_macs_per_second: int = 20  # sightings of MACs not in the registry written a second
    # Records of machines that never booted (never phoned home, untouched by operators),
    # on every path together: beyond it the ones last seen longest ago are forgotten.
    never_booted: int = 10_000
    # HTTP, in each HTTP worker process (docs/SECURITY.md, "The boot network"):
    http_connections: int = 4096  # connections held at once (then new ones wait to be accepted)
    http_header_timeout: int = 10  # seconds a connection has to send a whole request head
    http_requests_per_client: int = 4  # requests in flight from one address (loopback: any)


@dataclass(frozen=True)
class PathSettings:
    data_dir: Path = Path("var")
    assets_dir: Path = Path("assets")
    tftp_root: Path = Path("tftproot")
    templates_dir: Path = Path("cloud-configs")


@dataclass(frozen=True)
class EtcdTls:
    """The files of an etcd client that speaks TLS (``etcd_ca``, ``etcd_cert`` and
    ``etcd_key`` of the store or the cluster settings), checked when the settings load:
    the CA certificate(s) that signed etcd's server certificates, and the certificate and
    key with which the client proves who it is to an etcd with ``--client-cert-auth``
    (both or neither). The PEM text is what was read and checked; the nodes' configs
    carry the cluster's (see docs/SECURITY.md)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    ca_pem: str = field(default="", repr=False)
    cert_pem: str = field(default="", repr=False)
    key_pem: str = field(default="", repr=False)


@dataclass(frozen=True)
class StoreSettings:
    backend: str = "sqlite"
    etcd_endpoints: tuple[str, ...] = ()
    etcd_prefix: str = "/pxeserver/"
    timeout: float = 3.0  # deadline of every store call, seconds
    etcd_tls: EtcdTls | None = None  # etcd_ca, etcd_cert, etcd_key; with https:// endpoints


@dataclass(frozen=True)
class ClusterSettings:
    etcd_endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)  # what nodes join
    # Peer URLs for the nodes' etcd proxies; default: the client URLs on port 2380.
    etcd_peer_urls: tuple[str, ...] = ()
    # etcd_ca, etcd_cert, etcd_key: files on this host that the nodes' configs carry to
    # the nodes, whose etcd proxies then speak TLS to the cluster.
    etcd_tls: EtcdTls | None = None
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
FLATCAR_KEY = Path(__file__).resolve().parent.parent / "keys" / "flatcar-image-signing-key.asc"
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
