"""``pxeserver check``'s look at the cluster's etcd when it speaks TLS: the v2 API fleet
needs is asked for with the nodes' own files (cluster.etcd_ca, etcd_cert, etcd_key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxeserver.checks import _cluster_problems, _etcd_v2, _tls_context

from ..support.certs import Pki
from ..support.etcd import EtcdMember
from ..support.settings import make_settings

pytestmark = pytest.mark.etcd


def test_the_v2_api_is_asked_for_over_tls_with_the_nodes_files(
    tmp_path: Path, tls_etcd: EtcdMember, pki: Pki
) -> None:
    cluster = {
        "etcd_endpoints": [tls_etcd.client_url],
        "etcd_peer_urls": [tls_etcd.peer_url],
        "etcd_ca": str(pki.crt("ca")),
        "etcd_cert": str(pki.crt("client")),
        "etcd_key": str(pki.key("client")),
    }
    settings = make_settings(tmp_path, {"cluster": cluster})
    context = _tls_context(settings.cluster.etcd_tls)
    found = _etcd_v2(tls_etcd.client_url, context=context)
    assert found is not None and found[0] is True, found
    # Without the nodes' files this etcd does not answer at all: the context is what works.
    assert _etcd_v2(tls_etcd.client_url) is None
    problems = [str(p) for p in _cluster_problems(settings)]
    assert all("loopback" in p for p in problems), problems
