"""A user and password in an etcd URL show nowhere (issue 16, item 6).

The server runs on an etcd named ``http://user:SECRET@127.0.0.1:PORT`` (pxeserver does not
send them: it warns, and authenticates with client certificates), and every surface is
searched for the password while etcd is up and while it is down: the log at DEBUG,
``/healthz``, the 503 bodies (plain text and JSON), ``/metrics``, the API, the page,
``pxeserver check`` and ``pxeserver render``. Each also shows the URL redacted where it
shows it at all (``http://***@127.0.0.1:PORT``): the positive control that the search
looked where the URL is.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeserver.logs import JsonFormatter, TextFormatter, redact

from ..support.cli import run
from ..support.etcd import EtcdMember, wait_answers
from ..support.server import ServerProcess

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

NODE = "52:54:00:5e:c3:01"
NEW = "52:54:00:5e:c3:03"


def surfaces(new: str) -> list[str]:
    """What the server shows; ``new`` is a machine it has not seen (a 503 while etcd is
    down)."""
    api = ["/api/v1/nodes", f"/api/v1/nodes/{NODE}", "/api/v1/info", "/api/v1/openapi.json"]
    boot = [f"/ipxe?mac={new}", f"/cloud-config?mac={new}"]
    return ["/healthz", "/metrics", "/", *api, *boot]


@pytest.fixture
def member(tmp_path: Path) -> Iterator[EtcdMember]:
    m = EtcdMember("redact", tmp_path / "etcd", tmp_path)
    m.start()
    wait_answers(m)
    yield m
    m.stop()


def test_the_password_of_an_etcd_url_shows_nowhere(tmp_path: Path, member: EtcdMember) -> None:
    password = "pw-" + secrets.token_hex(8)
    url = member.client_url.replace("http://", f"http://pxe:{password}@")
    shown = member.client_url.replace("http://", "http://***@")
    raw = {
        "server": {"listen": "127.0.0.1", "log_level": "DEBUG"},
        "store": {"backend": "etcd", "etcd_endpoints": [url], "timeout": 1},
        # The nodes' etcd too: `check` names a loopback URL there.
        "cluster": {"etcd_endpoints": [url]},
        "paths": {"data_dir": str(tmp_path / "var")},
    }
    s = ServerProcess(tmp_path / "server", settings=raw, args=["--no-dhcp", "--no-tftp"])
    assert s.config is not None and password in s.config.read_text()  # where it is written
    said: dict[str, str] = {}
    s.start()
    try:
        assert s.get(f"/ipxe?mac={NODE}")[0] == 200  # the store works: the URL is used
        for path in surfaces("52:54:00:5e:c3:02"):
            said[f"up {path}"] = s.get(path)[2].decode(errors="replace")
        said["up check"] = both(run("check", "--config", str(s.config), cwd=tmp_path))
        member.stop()
        for path in surfaces(NEW):
            said[f"down {path}"] = s.get(path)[2].decode(errors="replace")
        said["down check"] = both(run("check", "--config", str(s.config), cwd=tmp_path))
        said["down render"] = both(
            run("render", "--config", str(s.config), "--mac", NODE, cwd=tmp_path)
        )
    finally:
        s.stop()
        member.start()
    said["log"] = s.log()
    for where, text in said.items():
        assert password not in text, f"{where} shows the password:\n{text}"
    # The positive control: these surfaces show the URL, redacted.
    for where in ("down /healthz", f"down /ipxe?mac={NEW}", "down /api/v1/nodes", "log",
                  "up check", "down check"):  # fmt: skip
        assert shown in said[where], f"{where} does not show {shown}:\n{said[where]}"
    assert "carries a user and password, which pxeserver does not send" in said["log"]
    assert json.loads(said["down /healthz"])["status"] == "degraded"


def both(result: object) -> str:
    return f"{getattr(result, 'stdout', '')}\n{getattr(result, 'stderr', '')}"


def test_every_log_line_is_redacted_in_both_formats() -> None:
    """Also what pxeserver does not build itself: a library's message, a traceback."""
    try:
        raise ValueError("cannot reach https://root:hunter2@10.0.0.1:2379/v3")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1,
                                   "calling %s failed", ("http://a:hunter2@h:1",),
                                   sys.exc_info())  # fmt: skip
    for formatter in (TextFormatter("%(message)s"), JsonFormatter()):
        line = formatter.format(record)
        assert "hunter2" not in line, line
        assert "http://***@h:1" in line and "https://***@10.0.0.1:2379/v3" in line, line


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://user:secret@127.0.0.1:2379", "http://***@127.0.0.1:2379"),
        ("https://token@etcd.example:2379/x?y=a@b", "https://***@etcd.example:2379/x?y=a@b"),
        ("http://u:p@ss@h:1", "http://***@h:1"),  # a password with '@' in it
        ("a (http://h:1, https://u:p@h2:2)", "a (http://h:1, https://***@h2:2)"),
        ("http://h:1/path@x", "http://h:1/path@x"),  # '@' after the host: not userinfo
        ("user:secret@h", "user:secret@h"),  # not a URL
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown
