"""Hostile HTTP against a real ``pxeserver serve`` (granian, not Flask's test client): raw
paths that try to leave the assets folder, hostile MACs, huge query strings and bodies, and
wrong or missing tokens. Each answer is a 4xx with a sentence, and nothing changes."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from ..support.server import ServerProcess
from ..support.web import config_path

MAC = "52:54:00:66:00:01"
TOKEN = "op-secret"
MARKER = b"outside the assets folder"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("webhostile")
    assets = base / "assets"
    (assets / "coreos").mkdir(parents=True)
    (assets / "coreos" / "vmlinuz").write_bytes(b"kernel" * 1000)
    (base / "secret.txt").write_bytes(MARKER)
    (assets / "escape").symlink_to(base / "secret.txt")
    settings = {"paths": {"assets_dir": str(assets)}, "server": {"api_token": TOKEN}}
    s = ServerProcess(base, settings=settings, args=["--no-dhcp", "--no-tftp"])
    s.start()
    yield s
    s.stop()


def raw(s: ServerProcess, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, bytes]:  # fmt: skip
    """Exactly this path and body on the wire: http.client neither normalises nor encodes."""
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def raw_upload(s: ServerProcess, method: str, path: str, body: bytes,
               headers: dict[str, str]) -> tuple[int, bytes]:  # fmt: skip
    """A body larger than the server will read: it may answer and close before the client
    has sent it all, so send what it takes and read the answer from the socket."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=30) as c:
        c.sendall(head.encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            c.sendall(body)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := c.recv(65536):
                answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def node(s: ServerProcess) -> dict[str, Any]:
    status, body = raw(s, "GET", f"/api/v1/nodes/{MAC}")
    assert status == 200, body
    found: dict[str, Any] = json.loads(body)
    return found


@pytest.fixture(scope="module")
def token(served: ServerProcess) -> str:
    """The node boots (iPXE script, cloud-config); its own token is in its cloud-config."""
    status, script = raw(served, "GET", f"/ipxe?mac={MAC}")
    assert status == 200
    status, body = raw(served, "GET", config_path(script.decode()))
    assert status == 200
    served.steps_written()  # the steps are written behind the answer: before "before"
    units = {u["name"]: u for u in yaml.safe_load(body)["coreos"]["units"]}
    return str(units["pxeserver-ready.service"]["content"].split("Bearer ")[1].split('"')[0])


@pytest.mark.parametrize(
    "path",
    ["/assets/../secret.txt", "/assets/coreos/../../secret.txt", "/assets/%2e%2e/secret.txt",
     "/assets/%2E%2E%2Fsecret.txt", "/assets/..%2fsecret.txt", "/assets/%252e%252e/secret.txt",
     "/assets/coreos/..%5c..%5csecret.txt", "/assets//etc/passwd", "/assets/%2fetc%2fpasswd",
     "/assets/escape", "/assets/coreos%00/vmlinuz", "/assets/./coreos/vmlinuz/..",
     "/assets/" + "a/" * 2000],
)  # fmt: skip
def test_asset_paths_stay_inside_the_folder(served: ServerProcess, path: str) -> None:
    status, body = raw(served, "GET", path)
    # (308: Werkzeug merges "//" and redirects, to a path still inside /assets/)
    assert status in (400, 404, 414) or (status == 308 and b'href="http://127.0.0.1:' in body
                                         and b"/assets/" in body), (status, body[:200])  # fmt: skip
    assert MARKER not in body and b"root:" not in body
    assert raw(served, "GET", "/assets/coreos/vmlinuz") == (200, b"kernel" * 1000)


@pytest.mark.parametrize(
    "mac",
    ["zz:zz:zz:zz:zz:zz", "52:54:00:66:00", "52:54:00:66:00:01:02", "%00", "52%0a54%0a00",
     "%E2%98%83", "%27%20OR%201%3D1%20--", "{{7*7}}", "a" * 3000, "52:54:00:66:00:01%00"],
)  # fmt: skip
def test_hostile_macs_are_a_short_400_and_record_nothing(served: ServerProcess, mac: str) -> None:
    before = json.loads(raw(served, "GET", "/api/v1/nodes")[1])["count"]
    for method, path in [("GET", f"/ipxe?mac={mac}"), ("GET", f"/cloud-config?mac={mac}"),
                         ("GET", f"/api/v1/nodes/{mac}"), ("POST", f"/api/v1/nodes/{mac}/ready"),
                         ("POST", f"/api/v1/nodes/{mac}/heartbeat")]:  # fmt: skip
        status, body = raw(served, method, path)
        assert status in (400, 404, 414), (path[:60], status)
        assert len(body) < 400, "an error echoes a hostile value only in part"
        if status == 400:
            assert b"MAC" in body or b"mac" in body
    assert json.loads(raw(served, "GET", "/api/v1/nodes")[1])["count"] == before


def test_huge_query_strings_are_414_with_a_sentence(served: ServerProcess) -> None:
    status, body = raw(served, "GET", f"/ipxe?mac={MAC}&x=" + "a" * 10_000)
    assert status == 414 and b"query string is longer than 4096 bytes" in body
    status, _ = raw(served, "GET", "/api/v1/nodes?label=" + "k=v&label=" * 3000)
    assert status == 414
    # far past what any server should read: refused, and the server goes on
    status, _ = raw(served, "GET", "/ipxe?x=" + "a" * 200_000)
    assert status in (400, 413, 414, 431)
    assert raw(served, "GET", "/healthz")[0] == 200


def test_huge_bodies_are_413_and_change_nothing(served: ServerProcess, token: str) -> None:
    before = node(served)
    big = json.dumps({"token": token, "pad": "x" * 1_000_000}).encode()
    for path in (f"/api/v1/nodes/{MAC}/ready", f"/api/v1/nodes/{MAC}/heartbeat"):
        status, body = raw_upload(served, "POST", path, big, {"Content-Type": "application/json"})
        assert status == 413 and b"larger than 65536 bytes" in body
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    assert raw_upload(served, "PATCH", f"/api/v1/nodes/{MAC}", big, auth)[0] == 413
    assert node(served) == before


def test_wrong_and_missing_tokens_change_nothing(served: ServerProcess, token: str) -> None:
    before = node(served)
    wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
    cases = [
        ("PATCH", f"/api/v1/nodes/{MAC}", {}, 401),
        ("PATCH", f"/api/v1/nodes/{MAC}", wrong, 403),
        ("PATCH", f"/api/v1/nodes/{MAC}", {"Authorization": f"Bearer {token}"}, 403),
        ("PATCH", f"/api/v1/nodes/{MAC}", {"Authorization": f"Basic {TOKEN}"}, 401),
        ("DELETE", f"/api/v1/nodes/{MAC}", {}, 401),
        ("DELETE", f"/api/v1/nodes/{MAC}", wrong, 403),
        ("POST", f"/api/v1/nodes/{MAC}/ready", {}, 401),
        ("POST", f"/api/v1/nodes/{MAC}/ready", wrong, 403),
        ("POST", f"/api/v1/nodes/{MAC}/ready", {"Authorization": f"Bearer {TOKEN}"}, 403),
        ("POST", f"/api/v1/nodes/{MAC}/heartbeat", {}, 401),
        ("POST", f"/api/v1/nodes/{MAC}/heartbeat", {"Authorization": "Bearer "}, 401),
        ("POST", f"/api/v1/nodes/{MAC}/heartbeat", wrong, 403),
    ]
    body = json.dumps({"labels": {"owned": "yes"}, "profile": "debug"}).encode()
    for method, path, headers, expected in cases:
        status, answer = raw(served, method, path, body,
                             {"Content-Type": "application/json", **headers})  # fmt: skip
        assert status == expected, (method, path, headers, status, answer)
        assert b"token" in answer.lower()
    # a token in the body that is wrong is refused too
    status, _ = raw(served, "POST", f"/api/v1/nodes/{MAC}/ready",
                    json.dumps({"token": "nope"}).encode(),
                    {"Content-Type": "application/json"})  # fmt: skip
    assert status == 403
    assert node(served) == before  # no state, label, profile or event changed


def test_a_chunked_huge_body_changes_nothing(served: ServerProcess, token: str) -> None:
    before = node(served)
    head = (f"POST /api/v1/nodes/{MAC}/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n").encode()  # fmt: skip
    chunk = b"x" * 65536
    body = b'{"token": "' + token.encode() + b'", "pad": "'
    with socket.create_connection(("127.0.0.1", served.http_port), timeout=30) as c:
        c.sendall(head + f"{len(body):x}\r\n".encode() + body + b"\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(32):  # 2 MiB, never finished
                c.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            c.sendall(b'2\r\n"}\r\n0\r\n\r\n')
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while data := c.recv(65536):
                answer += data
    # (the WSGI layer reads no body without a length: the handler sees no token at all)
    assert answer.split(b" ", 2)[1] in (b"401", b"413"), answer[:200]
    assert raw(served, "GET", "/healthz")[0] == 200
    assert node(served) == before
