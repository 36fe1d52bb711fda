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
