"""The etcd TLS settings (pxeserver/config/tls.py): every problem with the files is one
line at load that names the setting, the file and the fix. Certificates are made by the
openssl command (tests/support/certs.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pxeserver import config
from pxeserver.errors import Problem

from .host.test_privileges import USER, as_user, python_for_user
from .support.certs import CLIENT_EXT, Pki

URL = "https://127.0.0.1:2379"


def parse(raw: dict[str, Any]) -> tuple[config.Settings, list[Problem]]:
    return config.parse(raw, "test.yaml", None)


def tls(pki: Pki, *, ca: str = "ca", client: str | None = "client", key: str | None = None,
        urls: tuple[str, ...] = (URL,)) -> dict[str, Any]:  # fmt: skip
    """A store section with these files (names in the Pki folder)."""
    raw: dict[str, Any] = {"backend": "etcd", "etcd_endpoints": list(urls),
                           "etcd_ca": str(pki.crt(ca))}  # fmt: skip
    if client:
        raw["etcd_cert"] = str(pki.crt(client))
        raw["etcd_key"] = str(pki.key(key or client))
    return {"store": raw}


def only_line(problems: list[Problem], *, warning: bool = False) -> str:
    found = [str(p) for p in problems if p.warning == warning]
    assert len(found) == 1, found
    return found[0]


def test_good_files_load_with_their_text(pki: Pki) -> None:
    settings, problems = parse(tls(pki))
    assert problems == []
    files = settings.store.etcd_tls
    assert files is not None
    assert (files.ca, files.cert, files.key) == (
        pki.crt("ca"),
        pki.crt("client"),
        pki.key("client"),
    )
    assert files.key_pem == pki.key("client").read_text()
    assert "PRIVATE KEY" not in repr(settings), "the key's text must not show in a repr"
    # A CA alone is TLS without a client certificate (etcd without --client-cert-auth).
    settings, problems = parse(tls(pki, client=None))
    assert problems == [] and settings.store.etcd_tls is not None
    assert settings.store.etcd_tls.cert is None


def test_https_without_a_ca_is_refused(pki: Pki) -> None:
    _, problems = parse({"store": {"etcd_endpoints": [URL]}})
    line = only_line(problems)
    assert line.startswith(f"test.yaml: store.etcd_endpoints: {URL} is https://, but ")
    assert "store.etcd_ca is not set" in line and "— set store.etcd_ca to the CA" in line


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ({"etcd_endpoints": ["http://127.0.0.1:2379"]},
         "store.etcd_ca: is set, but http://127.0.0.1:2379 is plain http://, where no TLS"),
        ({"etcd_endpoints": [URL, "http://127.0.0.2:2379"]},
         "store.etcd_endpoints: mixes https:// (https://127.0.0.1:2379) and plain http://"),
        ({"etcd_key": None}, "store.etcd_key: is not set, but etcd_cert is"),
        ({"etcd_ca": None}, "store.etcd_ca: is not set, but etcd_cert and etcd_key are"),
    ],
)  # fmt: skip
def test_a_combination_that_cannot_work_is_refused(
    pki: Pki, raw: dict[str, Any], said: str
) -> None:
    section = {**tls(pki)["store"], **raw}
    _, problems = parse({"store": {k: v for k, v in section.items() if v is not None}})
    assert said in only_line(problems)


def test_a_key_others_may_read_is_refused_with_the_chmod(pki: Pki, tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    shutil.copy(pki.key("client"), key)
    for mode in (0o644, 0o640, 0o604, 0o620):
        key.chmod(mode)
        raw = tls(pki)
        raw["store"]["etcd_key"] = str(key)
        _, problems = parse(raw)
        assert only_line(problems) == (
            f"test.yaml: store.etcd_key: {key} is mode {mode:04o}: users other than its owner "
            f"may read or change the private key — chmod 600 {key}"
        )
    key.chmod(0o400)  # the positive control: owner-only is fine
    assert parse(raw)[1] == []


def test_an_expired_client_certificate_is_refused_naming_the_date(pki: Pki) -> None:
    _, problems = parse(tls(pki, client="expired"))
    assert only_line(problems) == (
        f"test.yaml: store.etcd_cert: {pki.crt('expired')} expired on 2020-02-01 00:00 UTC — "
        f"renew it (signed by a CA etcd trusts) and put the new one at {pki.crt('expired')}"
    )


def test_a_certificate_that_expires_within_a_week_is_a_warning(pki: Pki, tmp_path: Path) -> None:
    name = "soon"
    shutil.copy(pki.key("client"), tmp_path / f"{name}.key")
    (tmp_path / "client.ext").write_text(CLIENT_EXT)
    subprocess.run(
        ["openssl", "req", "-new", "-key", f"{name}.key", "-subj", "/CN=soon", "-out", "s.csr"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", "s.csr", "-CA", str(pki.crt("ca")), "-CAkey",
         str(pki.key("ca")), "-CAcreateserial", "-out", f"{name}.crt", "-days", "3",
         "-extfile", "client.ext"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    raw = tls(pki)
    raw["store"]["etcd_cert"] = str(tmp_path / f"{name}.crt")
    raw["store"]["etcd_key"] = str(tmp_path / f"{name}.key")
    settings, problems = parse(raw)
    assert f"store.etcd_cert: warning: {tmp_path / 'soon.crt'} expires on " in only_line(
        problems, warning=True
    )
    assert settings.store.etcd_tls is not None  # a warning: the server still starts


@pytest.mark.parametrize(
    ("files", "said"),
    [
        ({"client": "client", "key": "stranger"}, "store.etcd_key: {key} is not the key of {crt}"),
        ({"client": "server"}, "store.etcd_cert: {crt} is not for client authentication"),
        ({"ca": "client.key"}, "store.etcd_ca: {ca} holds no PEM certificate"),
    ],
)
def test_files_that_do_not_fit_are_named(pki: Pki, files: dict[str, str], said: str) -> None:
    raw = tls(pki, client=files.get("client", "client"), key=files.get("key"))
    if "ca" in files:
        raw["store"]["etcd_ca"] = str(pki.dir / files["ca"])
    store = raw["store"]
    line = only_line(parse(raw)[1])
    assert said.format(key=store["etcd_key"], crt=store["etcd_cert"], ca=store["etcd_ca"]) in line


def test_a_client_certificate_of_another_ca_is_a_warning(pki: Pki) -> None:
    raw = tls(pki, client="stranger")
    line = only_line(parse(raw)[1], warning=True)
    assert f"store.etcd_cert: warning: {pki.crt('stranger')} is not signed by a CA in " in line
    assert "etcd's --trusted-ca-file" in line


def test_a_missing_file_is_named(pki: Pki, tmp_path: Path) -> None:
    raw = tls(pki)
    raw["store"]["etcd_ca"] = str(tmp_path / "nope.crt")
    assert only_line(parse(raw)[1]) == (
        f"test.yaml: store.etcd_ca: {tmp_path / 'nope.crt'} does not exist — give the path "
        "of the CA certificate (PEM) that signed etcd's server certificates"
    )


def test_paths_are_relative_to_the_settings_file(pki: Pki, tmp_path: Path) -> None:
    for name in ("ca.crt", "client.crt", "client.key"):
        shutil.copy(pki.dir / name, tmp_path / name)
    (tmp_path / "pxeserver.yaml").write_text(
        f"store: {{etcd_endpoints: [{URL}], etcd_ca: ca.crt, etcd_cert: client.crt, "
        "etcd_key: client.key}\n"
    )
    settings, _ = config.load(tmp_path / "pxeserver.yaml")
    assert settings.store.etcd_tls is not None
    assert settings.store.etcd_tls.key == tmp_path / "client.key"


def test_a_key_the_server_user_cannot_read_is_named_with_the_fix(pki: Pki) -> None:
    """As the user the server runs as (USER), not as root, who reads everything."""
    folder = Path("/tmp") / f"pxeserver-tls-{os.getpid()}"
    folder.mkdir(mode=0o755)
    try:
        for name in ("ca.crt", "client.crt", "client.key"):
            shutil.copy(pki.dir / name, folder / name)
            (folder / name).chmod(0o600 if name.endswith(".key") else 0o644)
        raw = tls(pki)
        raw["store"].update(etcd_ca=str(folder / "ca.crt"), etcd_cert=str(folder / "client.crt"),
                            etcd_key=str(folder / "client.key"))  # fmt: skip
        probe = (
            "import json, sys; from pxeserver import config; "
            "_, p = config.parse(json.loads(sys.argv[1]), 'test.yaml', None); "
            "print('\\n'.join(map(str, p)))"
        )
        python, env = python_for_user()
        out = as_user([python, "-c", probe, json.dumps(raw)], env)
        assert out.returncode == 0, out.stderr
        key = folder / "client.key"
        assert out.stdout.strip() == (
            f"test.yaml: store.etcd_key: {key} cannot be read by user {USER} (permission "
            f"denied) — let the user pxeserver runs as read it: chown {USER} {key}"
        )
    finally:
        shutil.rmtree(folder)


def test_the_cluster_files_are_checked_alike(pki: Pki) -> None:
    cluster = {
        "etcd_endpoints": ["https://192.0.2.1:2379"],
        "etcd_ca": str(pki.crt("ca")),
        "etcd_cert": str(pki.crt("expired")),
        "etcd_key": str(pki.key("expired")),
    }
    _, problems = parse({"cluster": cluster})
    assert f"cluster.etcd_cert: {pki.crt('expired')} expired on 2020-02-01" in only_line(problems)
    cluster.update(etcd_cert=str(pki.crt("client")), etcd_key=str(pki.key("client")))
    settings, problems = parse({"cluster": cluster})
    assert problems == [] and settings.cluster.etcd_tls is not None
    # Its peer URLs take part: the nodes' etcd proxy speaks to those too.
    _, problems = parse({"cluster": {**cluster, "etcd_peer_urls": ["http://192.0.2.1:2380"]}})
    assert "cluster.etcd_endpoints: mixes https://" in only_line(problems)


def test_a_user_and_password_in_a_store_url_are_a_warning_and_never_shown() -> None:
    url = "http://user:secret@127.0.0.1:2379"
    _, problems = parse({"store": {"etcd_endpoints": [url]}})
    line = only_line(problems, warning=True)
    said = "http://***@127.0.0.1:2379 carries a user and password, which pxeserver does not "
    assert said in line
    assert "secret" not in line and "user" not in line.split("carries")[0]
    _, problems = parse({"store": {"etcd_endpoints": ["ftp://user:secret@127.0.0.1:2379"]}})
    line = only_line(problems)
    assert "'ftp://***@127.0.0.1:2379' is not an http(s) URL" in line and "secret" not in line
