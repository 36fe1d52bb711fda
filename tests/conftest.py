"""Shared fixtures: settings, stores (SQLite and a real etcd), the app and its client."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeserver import config
from pxeserver.boot import BootService
from pxeserver.daemon import make_service
from pxeserver.store.sqlite import SQLiteStore
from pxeserver.web import create_app

from .support.etcd import EtcdMember

REPO = Path(__file__).resolve().parent.parent
_prefixes = itertools.count()

LAB_PROFILES: dict[str, Any] = {
    "coreos": {
        "kernel": "coreos/vmlinuz",
        "initrd": ["coreos/initrd.cpio.gz"],
        "args": ["coreos.autologin", "console=ttyS0"],
        "cloud_config": "coreos.yaml.j2",
    },
    "flatcar": {
        "kernel": "flatcar/current/flatcar_production_pxe.vmlinuz",
        "initrd": ["flatcar/current/flatcar_production_pxe_image.cpio.gz"],
        "args": ["flatcar.first_boot=1"],
        "cloud_config": "flatcar.yaml.j2",
    },
    "debug": {
        "kernel": "coreos/vmlinuz",
        "initrd": ["coreos/initrd.cpio.gz"],
        "args": ["console=ttyS0", "debug", "rack={{ node.labels.get('rack', 'none') }}"],
        "cloud_config": "coreos.yaml.j2",
    },
}


def make_settings(tmp_path: Path, raw: dict[str, Any] | None = None) -> config.Settings:
    """Settings for a test: the raw mapping, with paths inside tmp_path and shipped templates."""
    raw = dict(raw or {})
    paths = {
        "data_dir": str(tmp_path / "var"),
        "assets_dir": str(tmp_path / "assets"),
        "tftp_root": str(tmp_path / "tftproot"),
        "templates_dir": str(REPO / "cloud-configs"),
        **raw.get("paths", {}),
    }
    raw["paths"] = paths
    raw.setdefault("profiles", LAB_PROFILES)
    raw.setdefault("groups", [{"name": "default", "profile": "coreos"}])
    settings, problems = config.parse(raw, "test.yaml", None)
    errors = [p for p in problems if not p.warning]
    assert not errors, errors
    return settings


@pytest.fixture
def settings(tmp_path: Path) -> config.Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    """One real etcd for the session; tests keep apart by using their own key prefix."""
    base = tmp_path_factory.mktemp("etcd")
    member = EtcdMember("default", base / "data", base)
    member.start()
    yield member
    member.stop()


def etcd_prefix() -> str:
    return f"/pxeserver-test-{next(_prefixes)}/"


@pytest.fixture(params=["sqlite", "etcd"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each backend in turn: the store contract holds for both."""
    if request.param == "sqlite":
        s: Any = SQLiteStore(tmp_path / "store.db")
    else:
        from pxeserver.store.etcd import EtcdStore

        member = request.getfixturevalue("etcd")
        s = EtcdStore((member.client_url,), etcd_prefix(), timeout=3.0)
    yield s
    s.close()


@pytest.fixture
def service(settings: config.Settings, tmp_path: Path) -> Iterator[BootService]:
    s = SQLiteStore(tmp_path / "var" / "pxeserver.db")
    yield make_service(settings, s)
    s.close()


@pytest.fixture
def app(settings: config.Settings, service: BootService) -> Any:
    app = create_app(settings, service)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()
