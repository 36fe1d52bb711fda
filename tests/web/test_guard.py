"""The cap on requests in flight from one address (pxeserver.web.guard), on the app with
requests that stay in flight until the test lets them go, as a slow client's would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pxeserver.daemon import make_service
from pxeserver.web import create_app
from pxeserver.web.guard import InFlight

from ..support.net import wait_for
from ..support.settings import make_settings

SLOW = "192.0.2.7"
OTHER = "192.0.2.8"


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Any, threading.Event, InFlight]]:
    """An app with a route that answers once ``release`` is set, and its guard."""
    settings = make_settings(tmp_path, {"limits": {"http_requests_per_client": 3}})
    service = make_service(settings)
    app = create_app(settings, service)
    release = threading.Event()

    @app.get("/test/slow")
    def slow() -> str:
        release.wait(30)
        return "done"

    assert isinstance(app.wsgi_app, InFlight)
    yield app, release, app.wsgi_app
    release.set()
    service.close()


def get(app: Any, address: str, path: str = "/test/slow") -> Any:
    """The answer, read and closed as a server closes it once sent."""
    resp = app.test_client().get(path, environ_base={"REMOTE_ADDR": address})
    resp.get_data()
    resp.close()
    return resp


def test_one_address_holds_at_most_its_share(held: tuple[Any, threading.Event, InFlight]) -> None:
    app, release, guard = held
    with ThreadPoolExecutor(8) as pool:
        slow = [pool.submit(get, app, SLOW) for _ in range(3)]
        wait_for(lambda: guard.in_flight(SLOW) == 3, 10, "three slow requests in flight")
        turned_away = get(app, SLOW, "/healthz")
        assert turned_away.status_code == 503 and turned_away.headers["Retry-After"] == "1"
        assert "limits.http_requests_per_client" in turned_away.text
        # Another address, and this machine, are not held back by it.
        assert get(app, OTHER, "/healthz").status_code == 200
        assert get(app, "127.0.0.1", "/healthz").status_code == 200
        release.set()
        assert [f.result(10).text for f in slow] == ["done"] * 3
    # Each answer gave its slot back when it was closed: the address is welcome again.
    assert guard.in_flight(SLOW) == 0
    assert get(app, SLOW, "/healthz").status_code == 200


def test_loopback_is_not_counted(held: tuple[Any, threading.Event, InFlight]) -> None:
    app, release, guard = held
    with ThreadPoolExecutor(8) as pool:
        slow = [pool.submit(get, app, "127.0.0.1") for _ in range(5)]
        assert get(app, "127.0.0.1", "/healthz").status_code == 200
        release.set()
        assert [f.result(10).status_code for f in slow] == [200] * 5
    assert guard.in_flight("127.0.0.1") == 0


def test_a_view_that_raises_gives_its_slot_back(tmp_path: Path) -> None:
    def broken(environ: Any, start_response: Any) -> Any:
        raise RuntimeError("a broken view")

    guard = InFlight(broken, per_client=1)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            guard({"REMOTE_ADDR": SLOW}, lambda *a: None)
    assert guard.in_flight(SLOW) == 0
