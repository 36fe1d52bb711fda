"""``pxeserver assets fetch flatcar`` against a local HTTP server with files signed by a
key the test makes; the real gpg verifies. Also the shipped key and the shipped profile."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pxeserver import config
from pxeserver.commands.flatcar import FILES
from pxeserver.daemon import make_service
from pxeserver.model import MAC, Machine

from ..support.gpgkeys import Signer
from ..support.httpfiles import Files
from ..support.settings import REPO

KERNEL, INITRD = FILES


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signer]:
    s = Signer(tmp_path_factory.mktemp("gpg") / "home")
    yield s
    s.close()


@pytest.fixture
def files() -> Iterator[Files]:
    f = Files().start()
    yield f
    f.stop()


def publish(files: Files, signer: Signer, tmp: Path, version: str, **bodies: bytes) -> None:
    """Put a signed release on the server: /beta/amd64-usr/<version>/…"""
    folder = tmp / "release" / version
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        body = bodies.get(name.split(".")[0].split("_")[-1], f"{name} {version}\n".encode() * 999)
        path = folder / name
        path.write_bytes(body)
        files.files[f"/beta/amd64-usr/{version}/{name}"] = body
        files.files[f"/beta/amd64-usr/{version}/{name}.sig"] = signer.sign(path).read_bytes()
    text = tmp / "release" / version / "version.txt"
    text.write_text(f"FLATCAR_BUILD=1\nFLATCAR_VERSION={version}\nFLATCAR_VERSION_ID={version}\n")
    files.files["/beta/amd64-usr/current/version.txt"] = text.read_bytes()
    files.files["/beta/amd64-usr/current/version.txt.sig"] = signer.sign(text).read_bytes()


def settings_file(tmp: Path, files: Files, signer: Signer) -> Path:
    path = tmp / "pxeserver.yaml"
    raw = {
        "paths": {"assets_dir": str(tmp / "assets")},
        "flatcar": {
            "base_url": files.url + "/{channel}/{arch}-usr/",
            "signing_key": str(signer.export(tmp / "signer.asc")),
            "fingerprints": [signer.fingerprint],
        },
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def fetch(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pxeserver", "assets", "fetch", "flatcar", "--config", str(cfg),
         "--channel", "beta", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_fetch_verifies_keeps_versions_and_points_current(
    tmp_path: Path, files: Files, signer: Signer
) -> None:
    cfg = settings_file(tmp_path, files, signer)
    publish(files, signer, tmp_path, "4081.1.0")
    out = fetch(cfg)
    assert out.returncode == 0, out.stderr
    assert "Flatcar beta 4081.1.0 (amd64)" in out.stdout
    assert out.stdout.count("signature good") == 2
    assert KERNEL in out.stderr  # the progress bar's label
    root = tmp_path / "assets" / "flatcar"
    assert os.readlink(root / "current") == "4081.1.0"
    assert (root / "current" / KERNEL).read_bytes().startswith(KERNEL.encode())
    assert (root / "4081.1.0" / f"{INITRD}.sig").exists()

    publish(files, signer, tmp_path, "4116.0.0")
    out = fetch(cfg, "--version", "4116.0.0", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert os.readlink(root / "current") == "4116.0.0"
    assert sorted(p.name for p in root.iterdir()) == ["4081.1.0", "4116.0.0", "current"]
    # Fetching again verifies what is there instead of downloading it again.
    files.requests.clear()
    out = fetch(cfg, "--version", "4116.0.0")
    assert out.returncode == 0 and out.stdout.count("already here, signature good") == 2
    assert files.requests == []


@pytest.mark.parametrize(
    "spoil, why",
    [
        ("tampered", "BAD signature"),
        ("truncated-body", "BAD signature"),
        ("cut-short", "cut short"),
    ],
)
def test_a_file_that_fails_is_deleted_and_current_stays(
    tmp_path: Path, files: Files, signer: Signer, spoil: str, why: str
) -> None:
    cfg = settings_file(tmp_path, files, signer)
    publish(files, signer, tmp_path, "4081.1.0")
    assert fetch(cfg).returncode == 0
    publish(files, signer, tmp_path, "4116.0.0")
    url = f"/beta/amd64-usr/4116.0.0/{INITRD}"
    if spoil == "tampered":
        body = bytearray(files.files[url])
        body[100] ^= 0x01
        files.files[url] = bytes(body)
    elif spoil == "truncated-body":
        files.files[url] = files.files[url][:1000]
    else:
        files.cut.add(url)
    out = fetch(cfg)
    assert out.returncode == 1
    assert why in out.stderr and INITRD in out.stderr
    folder = tmp_path / "assets" / "flatcar" / "4116.0.0"
    assert not (folder / INITRD).exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(INITRD)]  # no .part left
    assert os.readlink(tmp_path / "assets" / "flatcar" / "current") == "4081.1.0"


def test_a_file_signed_by_another_key_is_refused(
    tmp_path: Path, files: Files, signer: Signer
) -> None:
    cfg = settings_file(tmp_path, files, signer)
    stranger = Signer(tmp_path / "stranger", "someone else")
    try:
        publish(files, stranger, tmp_path, "4081.1.0")
    finally:
        stranger.close()
    out = fetch(cfg)
    assert out.returncode == 1
    assert "not in the trusted signing key" in out.stderr
    assert not (tmp_path / "assets" / "flatcar" / "current").exists()
    assert not (tmp_path / "assets" / "flatcar" / "4081.1.0" / KERNEL).exists()


def test_a_tampered_version_txt_is_refused(tmp_path: Path, files: Files, signer: Signer) -> None:
    cfg = settings_file(tmp_path, files, signer)
    publish(files, signer, tmp_path, "4116.0.0")
    publish(files, signer, tmp_path, "4081.1.0")  # version.txt now names this one
    # Someone changes which release "current" names, without the signing key.
    path = "/beta/amd64-usr/current/version.txt"
    files.files[path] = files.files[path].replace(b"4081.1.0", b"4116.0.0")
    out = fetch(cfg)
    assert out.returncode == 1 and "version.txt: BAD signature" in out.stderr
    assert not (tmp_path / "assets" / "flatcar").exists()


def test_missing_release_says_what_the_server_answered(
    tmp_path: Path, files: Files, signer: Signer
) -> None:
    out = fetch(settings_file(tmp_path, files, signer), "--version", "1.2.3")
    assert out.returncode == 1 and "404" in out.stderr and "1.2.3" in out.stderr
    out = fetch(settings_file(tmp_path, files, signer), "--version", "latest!")
    assert out.returncode == 1 and "--version 'latest!'" in out.stderr


def test_shipped_key_is_flatcars(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    shown = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--with-colons", "--show-keys",
         str(config.FLATCAR_KEY)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], timeout=30)
    fprs = [line.split(":")[9] for line in shown.splitlines() if line.startswith("fpr:")]
    assert fprs[0] == config.FLATCAR_FINGERPRINT == "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A"
    assert "Flatcar Buildbot (Official Builds) <buildbot@flatcar-linux.org>" in shown
    assert config.FLATCAR_FINGERPRINT in (REPO / "README.md").read_text().replace(" ", "")


@pytest.mark.parametrize("source", ["defaults", "example"])
def test_shipped_flatcar_profile_first_boot_and_uefi_initrd(tmp_path: Path, source: str) -> None:
    path = None if source == "defaults" else REPO / "pxeserver.example.yaml"
    settings, _ = config.load(path, {"paths.data_dir": str(tmp_path)})
    assert settings.groups[0].profile == "flatcar"
    from pxeserver.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    service = make_service(settings, store)
    mac = MAC.parse("52:54:00:00:00:07")
    efi = service.preview(Machine(mac, platform="efi"), "http://192.0.2.1:8080").ipxe
    bios = service.preview(Machine(mac, platform="pcbios"), "http://192.0.2.1:8080").ipxe
    store.close()
    kernel_efi = next(line for line in efi.splitlines() if line.startswith("kernel "))
    kernel_bios = next(line for line in bios.splitlines() if line.startswith("kernel "))
    for line in (kernel_efi, kernel_bios):
        assert " flatcar.first_boot=1" in line
        assert "/assets/flatcar/current/flatcar_production_pxe.vmlinuz" in line
    assert f" initrd={INITRD}" in kernel_efi
    assert "initrd=" not in kernel_bios
    assert f"initrd --name {INITRD} http://192.0.2.1:8080/assets/flatcar/current/{INITRD}" in efi


def test_without_a_terminal_progress_is_lines_with_bytes_and_rate(
    tmp_path: Path, files: Files, signer: Signer
) -> None:
    """A fetch in a log or a pipe showed no progress at all (the bar needs a terminal)."""
    cfg = settings_file(tmp_path, files, signer)
    publish(files, signer, tmp_path, "4081.1.0", image=os.urandom(8 << 20))  # 8 chunks of 1 MiB
    out = fetch(cfg)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith(f"{INITRD}: ")]
    assert lines[0] == f"{INITRD}: downloading (8.4 MB)"
    steps = lines[1:-1]
    assert len(steps) >= 5, lines  # each tenth reached (1 MiB chunks: 7 of them)
    for line in steps:
        assert re.fullmatch(rf"{INITRD}: [0-9.]+ MB of 8\.4 MB \(\d+%\), [0-9.]+ MB/s", line), line
    assert re.fullmatch(rf"{INITRD}: 8\.4 MB in [0-9.]+ s, [0-9.]+ MB/s", lines[-1]), lines[-1]
    assert ".part" not in out.stderr and "\r" not in out.stderr


def test_in_a_terminal_progress_is_a_bar(tmp_path: Path, files: Files, signer: Signer) -> None:
    cfg = settings_file(tmp_path, files, signer)
    publish(files, signer, tmp_path, "4081.1.0", image=os.urandom(2 << 20))
    main, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pxeserver", "assets", "fetch", "flatcar", "--config",
             str(cfg), "--channel", "beta"],
            stdout=subprocess.PIPE, stderr=terminal, timeout=120,
        )  # fmt: skip
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal's other side is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main)
    assert proc.returncode == 0, shown
    text = shown.decode(errors="replace")
    assert f"{INITRD}  [" in text and "100%" in text, text  # click's bar, drawn in place
    assert "MB/s" not in text  # not the lines meant for logs


def test_progress_lines_come_every_so_often_when_the_size_is_unknown() -> None:
    from pxeserver.commands.flatcar import ProgressLines

    now = [0.0]
    out = io.StringIO()
    lines = ProgressLines("f", None, out, every=10.0, clock=lambda: now[0])
    for _ in range(5):
        now[0] += 4.0
        lines.advance(4_000_000)
    lines.done()
    assert out.getvalue().splitlines() == [
        "f: downloading",
        "f: 12.0 MB, 1.0 MB/s",  # 12 s: the first line after 10 s
        "f: 20.0 MB in 20.0 s, 1.0 MB/s",
    ]


@pytest.mark.parametrize(
    "spoil, words",
    [
        ("tampered", f"{INITRD}: BAD signature: the file is not what Flatcar signed (damaged or "
                     "changed on the way)"),
        ("html", f"{INITRD}: its .sig file holds no signature (an error page instead of the "
                 "file?)"),
    ],
)  # fmt: skip
def test_a_signature_failure_is_said_in_words(
    tmp_path: Path, files: Files, signer: Signer, spoil: str, words: str
) -> None:
    """It printed gpg's raw status lines and the name of the .part file."""
    cfg = settings_file(tmp_path, files, signer)
    publish(files, signer, tmp_path, "4081.1.0")
    url = f"/beta/amd64-usr/4081.1.0/{INITRD}"
    if spoil == "tampered":
        files.files[url] = files.files[url][:-1] + b"!"
    else:
        files.files[url + ".sig"] = b"<html><body>Moved</body></html>\n"
    out = fetch(cfg, "--no-progress")
    assert out.returncode == 1
    current = tmp_path / "assets" / "flatcar" / "current"
    assert out.stderr == f"pxeserver: {words}; the file was deleted, and {current} was not made\n"
    assert "GNUPG" not in out.stderr and ".part" not in out.stderr
