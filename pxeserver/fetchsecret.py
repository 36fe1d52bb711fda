"""One-time config fetch secrets: a machine's config is handed out once per boot, to the
machine that asked (docs/SECURITY.md, "The config of a boot").

The iPXE script of each boot carries a secret in its config URL
(``/cloud-config?mac=…&secret=…``, ``/ignition?…``). The secret is stateless: a MAC
(HMAC-SHA256) under the server's fetch key over the node's MAC address, the address that
fetched the script and the time it was issued, with that time and address beside it in
the clear::

    <issued: µs since the epoch, hex>.<address that fetched the script, packed, hex>.<tag>

So any HTTP worker holding the key can issue and check one without asking the store.
What the store (the node's record) adds is "once": the config step records the issue time
of the secret it was served for (``Node.config_issued``), and a secret not newer than that
is refused. Within one worker process :meth:`FetchSecrets.claim` refuses a second use at
once, before any store call; across workers the record does, once it has landed.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import hmac
import ipaddress
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from .errors import Forbidden, PxeError
from .model import MAC

KEY_FILE = "fetch.key"  # in the data folder, mode 0600, shared by every HTTP worker
# What a preview (explain, `pxeserver render`, the node page) shows for the secret: the
# real one is issued to the machine that fetches its script, never to a preview.
PREVIEW = "issued-per-boot"
# Where a boot's secret goes in a script kept for reuse (pxeserver.render.answers): each
# answer replaces it with a secret of its own. Never a secret itself (no tag).
SECRET_MARK = "secret-of-this-boot"
# Where a config may be asked from (server.config_fetch_from), beside the script's address:
# its network (default), that address only, or anywhere.
FROM = ("network", "address", "anywhere")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TAG_BYTES = 16
MICROS = 1_000_000  # issue times are µs since the epoch
CLAIMS_KEPT = 65_536  # MACs whose last used secret one worker remembers (then the store's)
AGAIN = "power-cycle the machine to boot again"


class Reason(str, enum.Enum):
    """Why a config fetch was refused: the ``reason`` label of the metric."""

    MISSING = "missing"  # no secret in the URL: an old script, or a person with curl
    WRONG = "wrong"  # not a secret this server's key issued for this MAC
    EXPIRED = "expired"  # issued longer ago than the window
    ADDRESS = "address"  # asked from another address than the one it was issued to
    USED = "used"  # the config of this boot was handed out already

    def __str__(self) -> str:
        return self.value


class ConfigRefused(Forbidden):
    """A config fetch refused (HTTP 403): the message says what was wrong and what to do;
    ``short`` is the timeline's wording (possible spoofing)."""

    def __init__(self, reason: Reason, message: str, short: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.short = short


class FetchSecrets:
    """Issues and checks the fetch secrets of one server (one per process; no store)."""

    def __init__(
        self,
        key: Callable[[], bytes],
        window: float,
        *,
        fetch_from: str = "address",
        connected: Callable[[str], Network | None] = lambda address: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key_source = key
        self._key: bytes | None = None
        self.window = window
        self.fetch_from = fetch_from
        self.connected = connected  # this server's own network holding an address, if any
        self.clock = clock
        self._lock = threading.Lock()
        self._claimed: OrderedDict[MAC, int] = OrderedDict()
        self._last_issued = 0

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = self._key_source()  # on first use: previews never need it
        return self._key

    def _tag(self, mac: MAC, issued: int, address: str) -> str:
        text = f"{mac.value}|{address}|{issued}".encode()
        digest = hmac.digest(self.key, text, "sha256")[:TAG_BYTES]  # one call: OpenSSL's
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, mac: MAC, address: str | None) -> str:
        """A new secret for the boot of ``mac`` whose script ``address`` fetched. Issue
        times never repeat in one process ("once" refuses a secret not newer than the one
        served last: two scripts in the same microsecond must not share a time). They are
        in microseconds so that this process's times stay with the clock: another worker
        issues by the clock, and its newer secret must not look older than ours."""
        with self._lock:
            issued = max(int(self.clock() * MICROS), self._last_issued + 1)
            self._last_issued = issued
        packed = _pack(address)
        return f"{issued:x}.{packed}.{self._tag(mac, issued, packed)}"

    def check(self, mac: MAC, secret: str | None, address: str | None) -> int:
        """The issue time (µs) of ``secret``, a good secret of ``mac`` asked from
        ``address``; else :class:`ConfigRefused`. Does not say whether it was used."""
        where = address or "an unknown address"
        if not secret:
            raise ConfigRefused(
                Reason.MISSING,
                f"{mac}: the config URL has no secret=: a config is handed out once per boot, "
                "to the machine that fetched its boot script, whose URL carries one; to read "
                f"a node's config run `pxeserver render {mac}` or open the node's page",
                f"asked without a secret from {where}",
            )
        issued, packed = _parse(secret)
        if issued is None or not hmac.compare_digest(
            secret.rpartition(".")[2], self._tag(mac, issued, packed)
        ):
            why = "a preview's placeholder" if PREVIEW in secret else "not one this server issued"
            raise ConfigRefused(
                Reason.WRONG,
                f"{mac}: the config URL's secret is {why} for this machine; {AGAIN} (servers "
                "that share a boot network need the same server.config_fetch_key)",
                f"wrong secret from {where}",
            )
        age = self.clock() - issued / MICROS
        if age > self.window:
            raise ConfigRefused(
                Reason.EXPIRED,
                f"{mac}: the config URL's secret was issued {age:.0f} s ago, longer than "
                f"server.config_fetch_window ({self.window:g} s); {AGAIN}",
                f"secret issued {age:.0f} s ago, from {where}",
            )
        issued_to = _unpack(packed)
        if not self._same_place(issued_to, _unpack(_pack(address))):
            place = "the network of " if self.fetch_from == "network" else ""
            raise ConfigRefused(
                Reason.ADDRESS,
                f"{mac}: this config is for {place}{issued_to}, the address that fetched the "
                f"boot script, not {where}; {AGAIN} (behind NAT or a relay, or if its OS gets "
                "an address elsewhere, set server.config_fetch_from: anywhere)",
                f"asked from {where}, the script went to {issued_to}",
            )
        return issued

    def _same_place(self, issued_to: str, asked: str) -> bool:
        """Whether ``asked`` may have the config of a script that went to ``issued_to``:
        the same address; with ``network``, an address of the same network (this server's
        own network that holds ``issued_to``; for a machine beyond a router, its /24 or
        /64): an OS that asked DHCP with a DUID gets another lease of that network."""
        if self.fetch_from == "anywhere" or asked == issued_to:
            return True
        if self.fetch_from != "network":
            return False
        try:
            script, config = ipaddress.ip_address(issued_to), ipaddress.ip_address(asked)
        except ValueError:
            return False  # an unknown address is only ever itself
        prefix = 24 if script.version == 4 else 64
        network = self.connected(issued_to) or ipaddress.ip_network(f"{script}/{prefix}", False)
        return config in network

    def claim(self, mac: MAC, issued: int, recorded: int | None) -> None:
        """Take the secret issued at ``issued`` for a config served now; refused if this
        worker, or the node's record (``recorded``), has used it or a newer one."""
        with self._lock:
            used = max(self._claimed.get(mac, 0), recorded or 0)
            if issued <= used:
                raise self.used(mac, issued)
            self._claimed[mac] = issued
            self._claimed.move_to_end(mac)
            while len(self._claimed) > CLAIMS_KEPT:
                self._claimed.popitem(last=False)

    def release(self, mac: MAC, issued: int) -> None:
        """Give a claim back: the config was not served after all (the store failed)."""
        with self._lock:
            if self._claimed.get(mac) == issued:
                del self._claimed[mac]

    @staticmethod
    def used(mac: MAC, issued: int) -> ConfigRefused:
        return ConfigRefused(
            Reason.USED,
            f"{mac}: the config of this boot was handed out already (a second fetch of the "
            f"same URL); {AGAIN}",
            "second fetch of the same config",
        )


# Addresses packed already (every script's secret packs the address that asked for it),
# emptied when full: a few thousand machines' addresses, never a hostile client's many.
PACKED_KEPT = 4096
_packed: dict[str, str] = {}


def _pack(address: str | None) -> str:
    text = address or ""
    found = _packed.get(text)
    if found is not None:
        return found
    try:
        packed = ipaddress.ip_address(text).packed.hex()
    except ValueError:
        return "-"
    if len(_packed) >= PACKED_KEPT:
        _packed.clear()
    _packed[text] = packed
    return packed


def _unpack(packed: str) -> str:
    try:
        return str(ipaddress.ip_address(bytes.fromhex(packed)))
    except ValueError:
        return "an unknown address"


def _parse(secret: str) -> tuple[int | None, str]:
    parts = secret.split(".")
    if len(parts) != 3 or not 0 < len(parts[0]) <= 16:
        return None, ""
    try:
        return int(parts[0], 16), parts[1]
    except ValueError:
        return None, ""


def file_key(data_dir: Path) -> Callable[[], bytes]:
    """The fetch key kept in ``<data_dir>/fetch.key``: made once (32 random bytes, mode
    0600) by whichever process needs it first, then read by every other."""

    def load() -> bytes:
        path = data_dir / KEY_FILE
        try:
            return _read_key(path)
        except FileNotFoundError:
            pass
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            with contextlib.suppress(FileExistsError):  # a process that got there first
                os.link(tmp, path)  # (atomic) keeps its key
        finally:
            tmp.unlink(missing_ok=True)
        return _read_key(path)

    return load


def _read_key(path: Path) -> bytes:
    text = path.read_text().strip()
    if len(text) < 32:
        raise PxeError(f"{path} holds no fetch key (too short); delete it to make a new one")
    return text.encode()


def setting_key(value: str) -> Callable[[], bytes]:
    """The fetch key given as ``server.config_fetch_key`` (several servers share it)."""
    return lambda: value.encode()
