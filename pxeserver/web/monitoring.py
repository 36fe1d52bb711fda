"""What monitoring asks: ``GET /metrics`` (Prometheus exposition of this server, summed
over its processes) and ``GET /healthz`` (200, or 503 when the store does not answer).

Counters and histograms come from :mod:`pxeserver.metrics` (multiprocess files when
serving). Node counts by state are asked of the boot policy at scrape time, so every HTTP
worker answers the same; a store that does not answer shows as ``pxeserver_store_up 0``
and a store error, not as a failed scrape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify

from .. import metrics
from ..errors import StoreUnavailable
from ..logs import redact
from ..model import State
from .context import WebBoot, service

bp = Blueprint("monitoring", __name__)


class NodesCollector:
    """``pxeserver_nodes{state}``, ``pxeserver_never_booted`` and ``pxeserver_store_up``,
    asked of the boot policy."""

    def __init__(self, boot: WebBoot) -> None:
        self.boot = boot

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("pxeserver_store_up", "1 if the node store answered this scrape")
        try:
            nodes = self.boot.nodes()
        except StoreUnavailable:
            metrics.store_errors.labels(where="metrics").inc()
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        counts = Counter(n.state for n in nodes)
        family = GaugeMetricFamily(
            "pxeserver_nodes", "Nodes in the registry by state", labels=["state"]
        )
        for state in State:
            family.add_metric([state.value], counts.get(state, 0))
        yield family
        unbooted = GaugeMetricFamily(
            "pxeserver_never_booted",
            "Nodes that never phoned home and that no operator touched (limits.never_booted "
            "bounds them)",
        )
        unbooted.add_metric([], sum(n.never_booted for n in nodes))
        yield unbooted


@bp.get("/metrics")
def scrape() -> Response:
    body, content_type = metrics.exposition([NodesCollector(service())])
    return Response(body, content_type=content_type)


@bp.get("/healthz")
def healthz() -> Response:
    problem = service().health()
    if problem is not None:
        resp = jsonify(status="degraded", store=redact(problem))
        resp.status_code = 503
        return resp
    return jsonify(status="ok", store="ok")
