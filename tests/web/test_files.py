from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeserver.config import Settings

from ..support.server import ServerProcess

BLOB = bytes(range(256)) * 4096  # 1 MiB


Fetch = Callable[..., tuple[int, Any, bytes]]


def _fill(root: Path, outside: Path) -> None:
    (root / "coreos").mkdir(parents=True)
    (root / "coreos" / "vmlinuz").write_bytes(BLOB)
    (outside / "secret.txt").write_text("outside")
    os.symlink(outside / "secret.txt", root / "escape")
    os.symlink(root / "coreos" / "vmlinuz", root / "alias")


@pytest.fixture
def assets(settings: Settings, tmp_path: Path) -> Path:
    """The app's assets folder, filled (for the tests that use the Flask app alone)."""
    _fill(settings.paths.assets_dir, tmp_path)
    return settings.paths.assets_dir


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server: there the RSGI entrance answers files (granian sends the bytes)."""
    base = tmp_path_factory.mktemp("files")
    _fill(base / "assets", base)
    (base / "tftproot").mkdir()
    (base / "tftproot" / "ipxe.efi").write_bytes(BLOB[:1000])
    settings = {"paths": {"assets_dir": str(base / "assets"), "tftp_root": str(base / "tftproot")}}
    s = ServerProcess(base / "run", settings=settings, args=["--no-dhcp", "--no-tftp"])
    s.start()
    yield s
    s.stop()


@pytest.fixture(params=["app", "served"])
def fetch(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Fetch:
    """GET (or HEAD) a path: through the Flask app in-process, or a real server."""
    if request.param == "served":
        server: ServerProcess = request.getfixturevalue("served")

        def over_http(path: str, headers: dict[str, str] | None = None,
                      method: str = "GET") -> tuple[int, Any, bytes]:  # fmt: skip
            return server.request(method, path, None, headers)

        return over_http
    _fill(settings.paths.assets_dir, tmp_path)
    client = request.getfixturevalue("client")

    def in_process(path: str, headers: dict[str, str] | None = None,
                   method: str = "GET") -> tuple[int, Any, bytes]:  # fmt: skip
        r = client.open(path, method=method, headers=headers or {})
        return r.status_code, r.headers, r.data

    return in_process


def test_whole_file(fetch: Fetch) -> None:
    status, headers, body = fetch("/assets/coreos/vmlinuz")
    assert status == 200
    assert body == BLOB
    assert headers["Content-Length"] == str(len(BLOB))
    assert headers["ETag"] and headers["Last-Modified"] and headers["Accept-Ranges"] == "bytes"


def test_range_and_conditional(fetch: Fetch) -> None:
    status, headers, body = fetch("/assets/coreos/vmlinuz", {"Range": "bytes=100-199"})
    assert status == 206 and body == BLOB[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(BLOB)}"
    assert headers["Content-Length"] == "100"
    etag = fetch("/assets/coreos/vmlinuz")[1]["ETag"]
    assert fetch("/assets/coreos/vmlinuz", {"If-None-Match": etag})[0] == 304
    assert fetch("/assets/coreos/vmlinuz", {"If-None-Match": '"other"'})[0] == 200


def test_ranges_at_the_ends_and_past_them(fetch: Fetch) -> None:
    status, _, body = fetch("/assets/coreos/vmlinuz", {"Range": "bytes=-100"})
    assert status == 206 and body == BLOB[-100:]
    status, _, body = fetch("/assets/coreos/vmlinuz", {"Range": f"bytes={len(BLOB) - 10}-"})
    assert status == 206 and body == BLOB[-10:]
    status, headers, _ = fetch("/assets/coreos/vmlinuz", {"Range": f"bytes={len(BLOB)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(BLOB)}"


def test_if_modified_since_and_if_range(fetch: Fetch) -> None:
    first = fetch("/assets/coreos/vmlinuz")[1]
    since = {"If-Modified-Since": first["Last-Modified"]}
    assert fetch("/assets/coreos/vmlinuz", since)[0] == 304
    earlier = {"If-Modified-Since": "Thu, 01 Jan 1998 00:00:00 GMT"}
    assert fetch("/assets/coreos/vmlinuz", earlier)[0] == 200
    # a download resumed with the ETag it started with: the rest; with a stale one: all
    same = {"Range": "bytes=1000-", "If-Range": first["ETag"]}
    status, _, body = fetch("/assets/coreos/vmlinuz", same)
    assert status == 206 and body == BLOB[1000:]
    stale = {"Range": "bytes=1000-", "If-Range": '"not-this-one"'}
    status, _, body = fetch("/assets/coreos/vmlinuz", stale)
    assert status == 200 and body == BLOB


def test_head_has_the_headers_and_no_body(fetch: Fetch) -> None:
    status, headers, body = fetch("/assets/coreos/vmlinuz", method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(BLOB))


def test_boot_loaders_from_the_tftp_root(fetch: Fetch, settings: Settings) -> None:
    (settings.paths.tftp_root).mkdir(parents=True, exist_ok=True)
    (settings.paths.tftp_root / "ipxe.efi").write_bytes(BLOB[:1000])
    status, _, body = fetch("/boot/ipxe.efi", {"Range": "bytes=0-9"})
    assert status == 206 and body == BLOB[:10]


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
def test_confined_to_the_folder(fetch: Fetch, path: str) -> None:
    status, _, body = fetch(path)
    assert status == 404
    assert b"outside" not in body


def test_symlink_inside_the_folder_is_fine(fetch: Fetch) -> None:
    assert fetch("/assets/alias")[2] == BLOB


def test_static_assets_served_by_granian_itself(tmp_path: Path) -> None:
    """``server.static_assets``: the real server answers /assets/ from granian's own
    handler (no ETag, no Range: docs/BENCHMARKS.md), still confined to the folder."""
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
