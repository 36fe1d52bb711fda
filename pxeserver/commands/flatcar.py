"""``pxeserver assets fetch flatcar``: Flatcar's PXE kernel and initrd, verified with gpg.

Flatcar publishes each release at ``https://<channel>.release.flatcar-linux.net/<arch>-usr/
<version>/`` (``current/`` is the newest), every file with a detached OpenPGP signature
(``.sig``) made by a signing subkey of "Flatcar Buildbot (Official Builds)
<buildbot@flatcar-linux.org>", primary key fingerprint
``F88C FEDE FF29 A5B4 D952 3864 E25D 9AED 0593 B34A``. pxeserver ships that public key
(``pxeserver/keys/flatcar-image-signing-key.asc``) and verifies every file against it in a
temporary gpg home, so no keyring of the host is read or changed.

Versions are kept side by side under ``<assets>/flatcar/<version>/`` (``flatcar-arm64/``
for arm64) and ``current`` is a symlink to the last version whose files all verified; the
shipped Flatcar profile boots ``flatcar/current/…``. A file is downloaded to ``NAME.part``
and only renamed into place once its signature verifies; a file that is cut short or
fails verification is deleted and the command exits 1 saying why. ``current`` moves only
after both files of a version verified, so a failed fetch never changes what boots.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import click

from ..config import Settings
from ..errors import PxeError

FILES = ("flatcar_production_pxe.vmlinuz", "flatcar_production_pxe_image.cpio.gz")
CHANNELS = ("stable", "beta", "alpha", "lts")
ARCHES = ("amd64", "arm64")
VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
CHUNK = 1 << 20
TIMEOUT = 60.0


class FetchError(PxeError):
    """A download or a verification failed; the message says which file and why."""


@dataclass(frozen=True)
class Release:
    channel: str
    arch: str
    version: str
    url: str  # ends with /
    folder: Path  # <assets>/flatcar/<version>


def release_root(settings: Settings, channel: str, arch: str) -> str:
    return settings.flatcar.base_url.format(channel=channel, arch=arch)


def target_folder(settings: Settings, arch: str) -> Path:
    """Where versions of ``arch`` are kept: the shipped profile boots flatcar/current/."""
    name = "flatcar" if arch == "amd64" else f"flatcar-{arch}"
    return Path(settings.paths.assets_dir) / name


def _open(url: str) -> BinaryIO:
    try:
        resp: BinaryIO = urllib.request.urlopen(url, timeout=TIMEOUT)
        return resp
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url}: the server answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{url}: cannot download ({reason})") from exc


def resolve_version(settings: Settings, root: str, version: str | None) -> str:
    """The version to fetch: as given, or the one ``current/version.txt`` names.

    version.txt is signed like the images and verified too: otherwise whoever can alter
    it could point ``current`` at an old (signed, but vulnerable) release.
    """
    if version and version != "current":
        if not VERSION.fullmatch(version):
            raise FetchError(f"--version {version!r}: write a Flatcar version such as 4081.2.0")
        return version
    url = root + "current/version.txt"
    with tempfile.TemporaryDirectory(prefix="pxeserver-flatcar-") as tmp:
        text_path, sig_path = Path(tmp) / "version.txt", Path(tmp) / "version.txt.sig"
        download(url, text_path, False)
        download(url + ".sig", sig_path, False)
        verify(text_path, sig_path, settings.flatcar.signing_key, settings.flatcar.fingerprints)
        text = text_path.read_text("utf-8", "replace")
    found = re.search(r"^FLATCAR_VERSION=([0-9.]+)\s*$", text, re.MULTILINE)
    if not found or not VERSION.fullmatch(found.group(1)):
        raise FetchError(f"{url} names no FLATCAR_VERSION; give --version")
    return found.group(1)


def download(url: str, dest: Path, progress: bool, name: str | None = None) -> None:
    """Stream ``url`` into ``dest``; a body shorter than its Content-Length is an error.
    ``progress``: show it (``name``: the file's name to show, ``dest``'s by default)."""
    with _open(url) as resp, open(dest, "wb") as out:
        length = resp.headers.get("Content-Length")  # type: ignore[attr-defined]
        total = int(length) if length and length.isdigit() else None
        got = 0
        with _progress(progress, total, name or dest.name) as advance:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    # IncompleteRead: the server closed before Content-Length bytes came.
                    raise FetchError(
                        f"{url}: the download was cut short after {got} bytes ({exc!r})"
                    ) from exc
                if not chunk:
                    break
                out.write(chunk)
                got += len(chunk)
                advance(len(chunk))
    if total is not None and got != total:
        raise FetchError(f"{url}: the download was cut short: {got} of {total} bytes")


@contextlib.contextmanager
def _progress(
    show: bool, total: int | None, label: str, stream: TextIO | None = None
) -> Iterator[Callable[[int], None]]:
    """A bar in a terminal; without one (a log, a pipe), :class:`ProgressLines`."""
    stream = stream or sys.stderr
    if not show:
        yield lambda n: None
        return
    if stream.isatty() and total is not None:
        bar: Any = click.progressbar(length=total, label=label, file=stream, width=30)
        with bar:
            yield bar.update
        return
    lines = ProgressLines(label, total, stream)
    yield lines.advance
    lines.done()


class ProgressLines:
    """Progress as lines, for a log: one at each tenth of the file (or every
    ``every`` seconds, when the size is unknown or the download slow) and one at the end,
    each with the bytes so far and the rate."""

    def __init__(self, label: str, total: int | None, stream: TextIO, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.label, self.total, self.stream, self.every, self.clock = (
            label,
            total,
            stream,
            every,
            clock,
        )
        self.started = self.last_at = clock()
        self.got = self.last_tenth = 0
        size = f" ({_mb(total)})" if total is not None else ""
        self._say(f"{label}: downloading{size}")

    def advance(self, n: int) -> None:
        self.got += n
        now = self.clock()
        tenth = self.got * 10 // self.total if self.total else 0
        if (self.total and tenth > self.last_tenth and self.got < self.total) or (
            now - self.last_at >= self.every
        ):
            self.last_tenth, self.last_at = tenth, now
            share = f" of {_mb(self.total)} ({self.got * 100 // self.total}%)" if self.total else ""
            self._say(f"{self.label}: {_mb(self.got)}{share}, {self._rate(now)}")

    def done(self) -> None:
        now = self.clock()
        self._say(f"{self.label}: {_mb(self.got)} in {now - self.started:.1f} s, {self._rate(now)}")

    def _rate(self, now: float) -> str:
        return f"{_mb(self.got / max(now - self.started, 1e-3))}/s"

    def _say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def _mb(n: float | None) -> str:
    return f"{(n or 0) / 1e6:.1f} MB"


def verify(
    path: Path,
    signature: Path,
    keyfile: Path,
    fingerprints: tuple[str, ...],
    name: str | None = None,
) -> str:
    """Check ``signature`` over ``path`` against ``keyfile``; return the signing key's id.

    Runs gpg in a throw-away home. Accepts a good signature (also one by a signing subkey
    that has expired since: old releases stay verifiable) whose primary key is one of
    ``fingerprints``; anything else raises :class:`FetchError` that says why in words,
    naming the file ``name`` (``path``'s name by default: a download's ``.part`` is not
    the name a person knows).
    """
    if not keyfile.is_file():
        raise FetchError(f"the signing key {keyfile} does not exist; set flatcar.signing_key")
    with tempfile.TemporaryDirectory(prefix="pxeserver-gpg-") as home:
        os.chmod(home, 0o700)
        try:
            run = [shutil.which("gpg") or "gpg", "--homedir", home, "--batch", "--no-tty"]
            imported = subprocess.run(
                [*run, "--quiet", "--import", str(keyfile)], capture_output=True, timeout=60
            )
            if imported.returncode != 0:
                why = imported.stderr.decode(errors="replace").strip()
                raise FetchError(f"cannot read the signing key {keyfile}: {why}")
            checked = subprocess.run(
                [*run, "--status-fd", "1", "--verify", str(signature), str(path)],
                capture_output=True,
                timeout=300,
            )
        except FileNotFoundError as exc:
            raise FetchError("gpg is not installed: apt-get install gnupg") from exc
        finally:
            gpgconf = shutil.which("gpgconf")
            if gpgconf:  # stop any agent gpg started for this home before it is removed
                subprocess.run([gpgconf, "--homedir", home, "--kill", "all"], capture_output=True)
        return _judge(checked.stdout.decode(errors="replace"), name or path.name, fingerprints)


def _judge(status: str, name: str, fingerprints: tuple[str, ...]) -> str:
    """What gpg's status lines say of the signature over ``name``, in words: the key id
    if it is good, else :class:`FetchError` saying why not (never gpg's own lines)."""
    words = [line.split()[1:] for line in status.splitlines() if line.startswith("[GNUPG:] ")]
    kinds = {w[0]: w[1:] for w in words if w}
    if "BADSIG" in kinds:
        raise FetchError(
            f"{name}: BAD signature: the file is not what Flatcar signed (damaged or changed "
            "on the way)"
        )
    if "REVKEYSIG" in kinds:
        raise FetchError(f"{name}: signed with a key Flatcar has revoked")
    if "NO_PUBKEY" in kinds:
        key = kinds["NO_PUBKEY"][0] if kinds["NO_PUBKEY"] else "?"
        raise FetchError(
            f"{name}: signed by key {key}, which is not in the trusted signing key; if "
            "Flatcar has a new signing subkey, point flatcar.signing_key at its current key"
        )
    valid = kinds.get("VALIDSIG")
    if not valid or not ({"GOODSIG", "EXPKEYSIG"} & set(kinds)):
        raise FetchError(f"{name}: {_no_signature(kinds)}")
    primary = valid[-1].upper()
    if primary not in fingerprints:
        raise FetchError(f"{name}: signed by {primary}, which is not a trusted Flatcar key")
    return valid[0]


def _no_signature(kinds: dict[str, list[str]]) -> str:
    if "NODATA" in kinds:
        return "its .sig file holds no signature (an error page instead of the file?)"
    if "ERRSIG" in kinds:
        return "gpg could not check its signature (a damaged .sig file, or an unknown algorithm)"
    return "no good signature over it"


def _remove(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def fetch_file(release: Release, name: str, settings: Settings, progress: bool) -> str:
    """Download and verify one file of ``release``; return what was done, for the user."""
    final = release.folder / name
    sig = release.folder / f"{name}.sig"
    keyfile, trusted = settings.flatcar.signing_key, settings.flatcar.fingerprints
    if final.exists() and sig.exists():
        try:
            verify(final, sig, keyfile, trusted)
            return f"{name}: already here, signature good"
        except FetchError:
            _remove(final, sig)  # whatever it is, it is not a verified release file
    part = release.folder / f"{name}.part"
    sig_part = release.folder / f"{name}.sig.part"
    try:
        download(release.url + name + ".sig", sig_part, False)
        download(release.url + name, part, progress, name)
        key = verify(part, sig_part, keyfile, trusted, name)
    except FetchError:
        _remove(part, sig_part)
        raise
    os.replace(sig_part, sig)
    os.replace(part, final)
    return f"{name}: downloaded, signature good (key {key})"


def point_current(root: Path, version: str) -> None:
    """Make ``root/current`` a symlink to ``version``, replacing any old link atomically."""
    link = root / "current"
    tmp = root / f".current-{os.getpid()}"
    _remove(tmp)
    os.symlink(version, tmp)
    os.replace(tmp, link)


def fetch(
    settings: Settings,
    channel: str,
    arch: str,
    version: str | None,
    *,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> Path:
    """Fetch, verify and install a Flatcar release; return the folder ``current`` points at."""
    root_url = release_root(settings, channel, arch)
    version = resolve_version(settings, root_url, version)
    root = target_folder(settings, arch)
    release = Release(channel, arch, version, f"{root_url}{version}/", root / version)
    release.folder.mkdir(parents=True, exist_ok=True)
    say(f"Flatcar {channel} {version} ({arch}) from {release.url}")
    for name in FILES:
        try:
            say(fetch_file(release, name, settings, progress))
        except FetchError as exc:
            link = root / "current"
            now = f"still points at {os.readlink(link)}" if link.is_symlink() else "was not made"
            raise FetchError(f"{exc}; the file was deleted, and {link} {now}") from exc
    point_current(root, version)
    say(f"{root / 'current'} -> {version}")
    return release.folder
