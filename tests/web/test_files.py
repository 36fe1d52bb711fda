from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pxeserver.config import Settings

BLOB = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def assets(settings: Settings, tmp_path: Path) -> Path:
    root = settings.paths.assets_dir
    (root / "coreos").mkdir(parents=True)
    (root / "coreos" / "vmlinuz").write_bytes(BLOB)
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", root / "escape")
    os.symlink(root / "coreos" / "vmlinuz", root / "alias")
    return root


def test_whole_file(client: Any, assets: Path) -> None:
    r = client.get("/assets/coreos/vmlinuz")
    assert r.status_code == 200
    assert r.data == BLOB
    assert r.headers["Content-Length"] == str(len(BLOB))
    assert r.headers["ETag"] and r.headers["Last-Modified"]


def test_range_and_conditional(client: Any, assets: Path) -> None:
    r = client.get("/assets/coreos/vmlinuz", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.data == BLOB[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(BLOB)}"
    etag = client.get("/assets/coreos/vmlinuz").headers["ETag"]
    assert client.get("/assets/coreos/vmlinuz", headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/assets/../secret.txt",
        "/assets/coreos/../../secret.txt",
        "/assets/escape",
        "/assets/coreos",
        "/assets/%2e%2e/secret.txt",
        "/assets/coreos/%00",
        "/assets/nothing",
    ],
)
def test_confined_to_the_folder(client: Any, assets: Path, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert b"outside" not in r.data


def test_symlink_inside_the_folder_is_fine(client: Any, assets: Path) -> None:
    assert client.get("/assets/alias").data == BLOB


def test_static_assets_served_by_granian_itself(tmp_path: Path) -> None:
    """``server.static_assets``: the real server answers /assets/ from granian's own
    handler (no ETag, no Range: docs/BENCHMARKS.md), still confined to the folder."""
    from ..support.server import ServerProcess

    root = tmp_path / "assets"
    (root / "coreos").mkdir(parents=True)
    (root / "coreos" / "vmlinuz").write_bytes(BLOB)
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", root / "escape")
    settings = {"server": {"static_assets": True}, "paths": {"assets_dir": str(root)}}
    s = ServerProcess(tmp_path / "run", settings=settings, args=["--no-dhcp", "--no-tftp"])
    s.start()
    try:
        status, headers, body = s.get("/assets/coreos/vmlinuz")
        assert status == 200 and body == BLOB
        assert headers["Server"] == "granian" and "ETag" not in headers
        for path in ("/assets/escape", "/assets/../secret.txt", "/assets/nothing"):
            status, _, body = s.get(path)
            assert status == 404 and b"outside" not in body, path
        status, _, body = s.get("/boot.ipxe")  # everything else is still the app's
        assert status == 200 and body.startswith(b"#!ipxe")
    finally:
        s.stop()


def test_static_assets_setting_is_checked(tmp_path: Path) -> None:
    from pxeserver.config import load
    from pxeserver.errors import ConfigError

    path = tmp_path / "p.yaml"
    path.write_text("server:\n  static_assets: yes please\n")
    with pytest.raises(ConfigError, match="static_assets"):
        load(path, {})
    path.write_text("server:\n  static_assets: true\n")
    assert load(path, {})[0].server.static_assets is True


def test_the_first_404_for_a_file_is_logged_with_the_machine(
    client: Any, assets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A machine whose kernel is missing boot-loops; the server said nothing about it."""
    from pxeserver.web import files

    files._missed.clear()
    assert client.get("/ipxe?mac=52:54:00:12:34:58").status_code == 200
    with caplog.at_level("WARNING", logger="pxeserver.web.files"):
        for _ in range(3):
            assert client.get("/assets/flatcar/current/kernel").status_code == 404
        assert client.get("/assets/coreos/vmlinuz").status_code == 200  # there: nothing said
        assert client.get("/boot/ipxe.efi").status_code == 404
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0] == (
        f"52:54:00:12:34:58 at 127.0.0.1 asked for flatcar/current/kernel, which is not in "
        f"{assets} (404; the next 404s for it are not logged): fetch it: pxeserver assets "
        "fetch flatcar --config test.yaml"
    )
    assert caplog.records[0].mac == "52:54:00:12:34:58"  # type: ignore[attr-defined]
    assert lines[1].endswith("(404; the next 404s for it are not logged): run pxeserver assets "
                             "ipxe to copy the boot loaders")  # fmt: skip
