"""What the tests of the registry's parts share."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxeserver.config import Settings

from ..support.etcd import etcd_prefix
from ..support.settings import make_settings


@pytest.fixture(params=["sqlite", "etcd"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings of a server whose store is SQLite, or a real etcd (the ``etcd`` fixture)."""
    if request.param == "sqlite":
        return make_settings(tmp_path)
    member = request.getfixturevalue("etcd")
    return make_settings(tmp_path, {"store": {"backend": "etcd", "timeout": 3,
                                              "etcd_endpoints": [member.client_url],
                                              "etcd_prefix": etcd_prefix()}})  # fmt: skip
