"""Certificates for the TLS tests, made by the openssl command as an operator would.

One :class:`Pki` folder holds: a CA and the server certificate it signed for etcd on
127.0.0.1 (and ``localhost``), and one for another host (``elsewhere``); a client
certificate from the same CA; a second CA that etcd does not trust, with a client
certificate of its own (``stranger``); and a client certificate of the first CA that
expired in 2020. Keys are P-256 (quick to make) and mode 0600, as the settings demand.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SERVER_EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
ELSEWHERE_EXT = "subjectAltName=DNS:elsewhere.example\nextendedKeyUsage=serverAuth\n"
CLIENT_EXT = "extendedKeyUsage=clientAuth\n"
# `openssl ca` is the way to give a certificate dates in the past (x509 -req has only -days).
CA_CONF = """\
[ca]
default_ca = test
[test]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = anything
copy_extensions = none
[anything]
commonName = supplied
"""


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class Pki:
    def __init__(self, folder: Path) -> None:
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.authority("ca")
        self.authority("wrong-ca")
        self.leaf("server", "ca", SERVER_EXT)
        self.leaf("elsewhere", "ca", ELSEWHERE_EXT)
        self.leaf("client", "ca", CLIENT_EXT)
        self.leaf("stranger", "wrong-ca", CLIENT_EXT)
        self.expired_leaf("expired", "ca")

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def _new_key(self, name: str) -> None:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", f"{name}.key", cwd=self.dir)  # fmt: skip
        self.key(name).chmod(0o600)

    def authority(self, name: str) -> None:
        self._new_key(name)
        openssl("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.crt",
                "-days", "30", "-subj", f"/CN=pxeserver test {name}", cwd=self.dir)  # fmt: skip

    def _request(self, name: str) -> None:
        self._new_key(name)
        openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=self.dir)  # fmt: skip

    def leaf(self, name: str, ca: str, extensions: str) -> None:
        self._request(name)
        (self.dir / f"{name}.ext").write_text(extensions)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey",
                f"{ca}.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "30",
                "-extfile", f"{name}.ext", cwd=self.dir)  # fmt: skip

    def expired_leaf(self, name: str, ca: str) -> None:
        self._request(name)
        work = self.dir / f"{name}-ca"
        work.mkdir()
        (work / "index.txt").write_text("")
        (work / "serial").write_text("1000\n")
        (work / "ca.conf").write_text(CA_CONF.format(dir=work))
        (self.dir / f"{name}.ext").write_text(CLIENT_EXT)
        openssl("ca", "-batch", "-config", str(work / "ca.conf"), "-cert", f"{ca}.crt",
                "-keyfile", f"{ca}.key", "-in", f"{name}.csr", "-out", f"{name}.crt",
                "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
                "-extfile", f"{name}.ext", "-notext", cwd=self.dir)  # fmt: skip
