"""Shared fixtures: settings, stores (SQLite and a real etcd), the app and its client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeserver import config
from pxeserver.boot import BootService
from pxeserver.daemon import make_service
from pxeserver.store.sqlite import SQLiteStore
from pxeserver.web import create_app

from .support.certs import Pki
from .support.etcd import EtcdMember, etcd_prefix
from .support.fakes import FixedStore
from .support.settings import make_settings


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


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, etcd's server certificate, client certificates good and bad (support/certs.py)."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[EtcdMember]:
    """One real etcd for the session that serves only TLS, only to clients whose
    certificate its CA signed; tests keep apart by their own key prefix."""
    base = tmp_path_factory.mktemp("tls-etcd")
    member = EtcdMember("tls", base / "data", base, pki)
    member.start()
    yield member
    member.stop()


@pytest.fixture(params=["sqlite", "etcd", "fixed"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each backend in turn: the store contract holds for both, and for the in-memory
    fake the boot policy's tests use (tests/support/fakes.py), so that it stays faithful."""
    if request.param == "sqlite":
        s: Any = SQLiteStore(tmp_path / "store.db")
    elif request.param == "fixed":
        s = FixedStore()
    else:
        from pxeserver.store.etcd import EtcdStore

        member = request.getfixturevalue("etcd")
        s = EtcdStore((member.client_url,), etcd_prefix(), timeout=3.0)
    yield s
    s.close()


@pytest.fixture
def service(settings: config.Settings) -> Iterator[BootService]:
    """The boot policy as ``pxeserver serve`` builds it, over the test's SQLite store."""
    built = make_service(settings)
    yield built
    built.close()


@pytest.fixture
def app(settings: config.Settings, service: BootService) -> Any:
    app = create_app(settings, service)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()
