"""``/metrics``: the series operators scrape, in one process and summed across workers."""

from __future__ import annotations

import concurrent.futures
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pxeserver import metrics
from pxeserver.daemon import make_service
from pxeserver.web import create_app

from ..support.fakes import BrokenStore
from ..support.server import ServerProcess
from ..support.settings import make_settings
from ..support.web import boot


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def scrape(client: Any) -> str:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.content_type.startswith("text/plain")
    return str(r.text)


def test_a_boot_shows_in_the_series(client: Any) -> None:
    before = scrape(client)
    token = boot(client, "52:54:00:00:00:31")
    auth = {"Authorization": f"Bearer {token}"}
    client.post("/api/v1/nodes/52:54:00:00:00:31/ready", headers=auth)
    client.get("/ipxe?mac=52:54:00:00:00:32")
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("pxeserver_boots_started_total", profile="coreos") == 2
    assert grew("pxeserver_boots_completed_total", profile="coreos") == 1
    assert grew("pxeserver_boot_step_seconds_count", step="cloud-config") == 1
    assert grew("pxeserver_boot_step_seconds_count", step="ready") == 1
    assert grew("pxeserver_boot_step_seconds_count", step="ipxe") == 0  # first step of a boot
    assert sample(after, "pxeserver_nodes", state="ready") == 1
    assert sample(after, "pxeserver_nodes", state="booting") == 1
    assert sample(after, "pxeserver_nodes", state="lost") == 0
    assert sample(after, "pxeserver_store_up") == 1


def test_store_errors_are_counted_and_the_scrape_still_answers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    client = create_app(settings, make_service(settings, BrokenStore())).test_client()
    before = sample(scrape(client), "pxeserver_store_errors_total", where="http")
    assert client.get("/ipxe?mac=52:54:00:00:00:33").status_code == 503
    text = scrape(client)
    assert sample(text, "pxeserver_store_errors_total", where="http") == before + 1
    assert sample(text, "pxeserver_store_up") == 0
    assert "pxeserver_nodes{" not in text  # unknown, not zero


def test_the_series_tftp_and_dhcp_record_into(client: Any) -> None:
    metrics.tftp_transfers.labels(result="ok").inc()
    metrics.tftp_bytes.inc(1432)
    metrics.tftp_errors.labels(reason="timeout").inc()
    metrics.dhcp_offers.labels(port="67").inc()
    metrics.dhcp_ignored.labels(reason="not-pxe").inc()
    metrics.journal_depth.set(7)
    text = scrape(client)
    assert sample(text, "pxeserver_tftp_transfers_total", result="ok") >= 1
    assert sample(text, "pxeserver_tftp_bytes_total") >= 1432
    assert sample(text, "pxeserver_tftp_errors_total", reason="timeout") >= 1
    assert sample(text, "pxeserver_dhcp_offers_total", port="67") >= 1
    assert sample(text, "pxeserver_dhcp_ignored_total", reason="not-pxe") >= 1
    assert sample(text, "pxeserver_journal_depth") == 7


@pytest.mark.slow
def test_counts_are_summed_across_the_http_workers(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, args=["--no-dhcp", "--no-tftp", "--workers", "2"]).start()
    try:
        urls = [f"{server.url}/ipxe?mac=52:54:00:00:02:{i:02x}" for i in range(40)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda u: urllib.request.urlopen(u, timeout=30).read(), urls))
        pids = set()
        for _ in range(10):  # whichever worker answers, the sums are the same
            text = server.get("/metrics")[2].decode()
            assert sample(text, "pxeserver_boots_started_total", profile="flatcar") == 40
            assert sample(text, "pxeserver_nodes", state="booting") == 40
        pids = {p.name for p in (tmp_path / "var" / "metrics").iterdir()}
        assert pids, "no multiprocess files: the workers counted in their own memory"
    finally:
        server.stop()
    # A new serve starts from zero: the folder is emptied at start.
    server.start()
    try:
        text = server.get("/metrics")[2].decode()
        assert sample(text, "pxeserver_boots_started_total", profile="flatcar") == 0
        assert sample(text, "pxeserver_nodes", state="booting") == 40
    finally:
        server.stop()


def test_a_kept_child_is_the_labelled_series_and_counts_in_the_scrape(client: Any) -> None:
    kept = metrics.boots_from_disk.child("kept-child")
    assert kept is metrics.boots_from_disk.child("kept-child")
    assert kept is metrics.boots_from_disk.labels(profile="kept-child")
    before = sample(scrape(client), "pxeserver_boots_from_disk_total", profile="kept-child")
    kept.inc()
    metrics.boots_from_disk.child("kept-child").inc(2)
    after = sample(scrape(client), "pxeserver_boots_from_disk_total", profile="kept-child")
    assert after == before + 3
