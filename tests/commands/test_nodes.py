"""``pxeserver nodes``: words a person can act on, against a real server.

Found by a new user: the 401 spoke of the Authorization header (the CLI's option is
``--token``); ``--server localhost:8080`` and an https URL to an http server were "is the
server running?"; ``nodes set --label`` did not echo the label; ``nodes list --profile
nosuch`` printed an empty table and nothing else; ``--label rack`` answered with the
API's ``label=key=value`` syntax.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support.cli import run
from ..support.server import ServerProcess

TOKEN = "first-hour-token"
MAC = "52:54:00:0a:00:01"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("nodes")
    settings = {"server": {"listen": "127.0.0.1", "dhcp": False, "tftp": False,
                           "api_token": TOKEN}}  # fmt: skip
    s = ServerProcess(workdir, settings=settings).start()
    assert s.get(f"/ipxe?mac={MAC}")[0] == 200
    yield s
    s.stop()


def nodes(server: str, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--token", token] if token else []
    return run("nodes", "--server", server, *extra, *args, cwd=Path.cwd())


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, out
    assert out.stdout == "" and out.stderr.count("\n") == 1, out
    assert "Traceback" not in out.stderr
    return out.stderr.strip()


def test_changes_without_or_with_a_wrong_token_name_the_option(server: ServerProcess) -> None:
    line = one_line(nodes(server.url, "set", MAC, "--label", "rack=r1"))
    assert line == (
        f"pxeserver: PATCH /api/v1/nodes/{MAC}: 401: this server takes changes only with its "
        "API token: give --token TOKEN or set PXESERVER_API_TOKEN"
    )
    line = one_line(nodes(server.url, "set", MAC, "--label", "rack=r1", token="wrong"))
    assert line == (
        f"pxeserver: PATCH /api/v1/nodes/{MAC}: 403: the API token given (--token or "
        "PXESERVER_API_TOKEN) is not this server's: check it"
    )


def test_set_echoes_every_change(server: ServerProcess) -> None:
    out = nodes(server.url, "set", MAC, "--label", "rack=r1", "--label", "room=a",
                "--hostname", "web-1", "--profile", "coreos", token=TOKEN)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"{MAC} web-1: profile coreos (operator)",
        f"{MAC} web-1: label rack=r1",
        f"{MAC} web-1: label room=a",
        f"{MAC} web-1: hostname web-1",
    ]
    out = nodes(server.url, "set", MAC, "--label", "room=", "--profile", "", token=TOKEN)
    assert out.stdout.splitlines() == [
        f"{MAC} web-1: profile flatcar (group default)",
        f"{MAC} web-1: label room removed",
    ]


def test_an_empty_result_says_so_and_names_an_unknown_profile(server: ServerProcess) -> None:
    out = nodes(server.url, "list", "--profile", "nosuch")
    assert out.returncode == 0 and out.stdout.startswith("MAC ") and out.stdout.count("\n") == 1
    assert out.stderr == (
        "no nodes with profile nosuch; this server has no profile 'nosuch' (its profiles: "
        "coreos, flatcar)\n"
    )
    out = nodes(server.url, "list", "--state", "ready", "--label", "rack=r9")
    assert out.stderr == "no nodes with state ready and label rack=r9\n"
    # the positive control: a filter that matches prints rows and no note
    out = nodes(server.url, "list", "--profile", "flatcar")
    assert MAC in out.stdout and out.stderr == ""


def test_a_label_filter_without_a_value_is_the_cli_syntax(server: ServerProcess) -> None:
    line = one_line(nodes(server.url, "list", "--label", "rack"))
    assert line == "pxeserver: --label 'rack': write KEY=VALUE, e.g. --label rack=r1"


def test_a_server_without_a_scheme_is_named_as_such() -> None:
    line = one_line(nodes("localhost:8080", "list"))
    assert line == (
        "pxeserver: --server 'localhost:8080' is not a URL: write it with its scheme, e.g. "
        "http://localhost:8080"
    )


def test_https_to_a_plain_http_server_is_named_as_such(server: ServerProcess) -> None:
    tls_url = server.url.replace("http://", "https://")
    line = one_line(nodes(tls_url, "list"))
    assert line.startswith(f"pxeserver: {tls_url} does not speak TLS (")
    assert line.endswith(f"): it serves plain HTTP, so use {server.url}")


def test_http_to_a_tls_server_is_named_as_such(tmp_path: Path) -> None:
    """A server that speaks only TLS (a proxy in front of pxeserver, say) gets garbage
    from a plain HTTP client and hangs up."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        conn, _ = listener.accept()
        try:
            context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            pass  # a plain HTTP request is no TLS handshake: the server hangs up
        finally:
            conn.close()

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    try:
        line = one_line(nodes(f"http://127.0.0.1:{port}", "list"))
    finally:
        thread.join(10)
        listener.close()
    assert line == (
        f"pxeserver: http://127.0.0.1:{port} closed the connection without an HTTP answer; if "
        f"it serves HTTPS, use https://127.0.0.1:{port}"
    )


def test_no_server_says_how_to_start_one(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nobody listens there now
    line = one_line(nodes(f"http://127.0.0.1:{port}", "list"))
    assert line.startswith(f"pxeserver: cannot reach http://127.0.0.1:{port} (")
    assert "is `pxeserver serve` running? start it with " in line
