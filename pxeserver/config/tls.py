"""The TLS files of an etcd client, checked when the settings load: the store's
(``store.etcd_ca``, ``etcd_cert``, ``etcd_key``) and the nodes' (the same keys under
``cluster``, whose files the nodes' configs carry).

A certificate problem is one line at start that names the setting, the file and the fix,
rather than a handshake that fails later, on every call, with BoringSSL's words. Checked:

- the combination: https:// endpoints need a CA; TLS files beside http:// endpoints would
  be ignored, and a client certificate needs its key (and the other way round);
- each file: it exists, is a file, and the user pxeserver runs as can read it; the key
  is not open to its group or others (``chmod 600``) and not encrypted (nothing could
  type its passphrase);
- the contents: PEM certificates and key that parse; the client certificate within its
  validity (expired or not yet valid: an error; expiring within a week: a warning), made
  for client authentication (etcd refuses one whose extended key usage lacks clientAuth)
  and matching the key; a CA file whose certificates have all expired is an error.
  A client certificate the CA file did not sign is a warning: etcd may trust another CA.

What cannot be known here (the CA does not sign etcd's own certificate, etcd does not
trust this client certificate) shows when the store connects, with the file named too
(:mod:`pxeserver.store.etcd_tls`).
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .checker import Checker
from .settings import EtcdTls

EXPIRY_WARNING = timedelta(days=7)
WHAT = {
    "etcd_ca": "the CA certificate (PEM) that signed etcd's server certificates",
    "etcd_cert": "the client certificate (PEM) that etcd accepts",
    "etcd_key": "the client certificate's private key (PEM)",
}


def etcd_tls(
    c: Checker, raw: Mapping[str, Any], where: str, base: Path | None, urls: tuple[str, ...]
) -> EtcdTls | None:
    """``where.etcd_ca``, ``etcd_cert`` and ``etcd_key`` against the schemes of ``urls``
    (the endpoints the client talks to), then each file; None when TLS is off or a
    problem was found (the problem says which)."""
    ca, cert, key = (
        c.path(raw, name, where, base) for name in ("etcd_ca", "etcd_cert", "etcd_key")
    )
    https = [u for u in urls if urlsplit(u).scheme == "https"]
    plain = [u for u in urls if urlsplit(u).scheme != "https"]
    if https and plain:
        c.problem(
            f"{where}.etcd_endpoints",
            f"mixes https:// ({https[0]}) and plain http:// ({plain[0]})",
            "use one scheme: every member of an etcd cluster serves its clients alike",
        )
        return None
    if ca is None and cert is None and key is None:
        if https:
            c.problem(
                f"{where}.etcd_endpoints",
                f"{https[0]} is https://, but {where}.etcd_ca is not set, so nothing could "
                "verify etcd's certificate",
                f"set {where}.etcd_ca to {WHAT['etcd_ca']}",
            )
        return None
    if plain:
        c.problem(
            f"{where}.etcd_ca" if ca else f"{where}.etcd_cert",
            f"is set, but {plain[0]} is plain http://, where no TLS file is used",
            "write the https:// URLs etcd serves TLS on, or remove etcd_ca, etcd_cert and etcd_key",
        )
        return None
    if ca is None:
        c.problem(
            f"{where}.etcd_ca",
            "is not set, but etcd_cert and etcd_key are",
            f"set it to {WHAT['etcd_ca']}",
        )
        return None
    if (cert is None) != (key is None):
        missing, given = ("etcd_key", "etcd_cert") if key is None else ("etcd_cert", "etcd_key")
        c.problem(
            f"{where}.{missing}",
            f"is not set, but {given} is",
            "give both the client certificate and its key, or neither",
        )
        return None
    return _Files(c, where).check(ca, cert, key)


class _Files:
    """Reads and checks the files of one client, each problem naming the setting."""

    def __init__(self, c: Checker, where: str) -> None:
        self.c = c
        self.where = where
        self.now = datetime.now(timezone.utc)
        self.ok = True

    def problem(self, name: str, what: str, fix: str, *, warning: bool = False) -> None:
        self.c.problem(f"{self.where}.{name}", what, fix, warning=warning)
        self.ok = self.ok and warning

    def check(self, ca: Path, cert: Path | None, key: Path | None) -> EtcdTls | None:
        from cryptography import x509

        ca_text = self.read(ca, "etcd_ca")
        authorities = self.certificates(ca, ca_text, "etcd_ca")
        if authorities and max(a.not_valid_after_utc for a in authorities) < self.now:
            last = max(a.not_valid_after_utc for a in authorities)
            self.problem(
                "etcd_ca",
                f"the CA certificate in {ca} expired on {_day(last)}",
                "renew the CA (and what it signed) and point etcd_ca at the new one",
            )
        cert_text = key_text = ""
        if cert is not None and key is not None:
            cert_text, key_text = self.read(cert, "etcd_cert"), self.read(key, "etcd_key")
            found = self.certificates(cert, cert_text, "etcd_cert")
            client: x509.Certificate | None = found[0] if found else None
            if client is not None:
                self.client_certificate(cert, client, authorities, ca)
                if key_text:
                    self.private_key(key, key_text, cert, client)
        if not self.ok:
            return None
        return EtcdTls(ca, cert, key, ca_text, cert_text, key_text)

    def read(self, path: Path, name: str) -> str:
        """The file's text, or "" after a problem saying why it cannot be used."""
        secret = name == "etcd_key"
        user = _user()
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            self.problem(name, f"{path} does not exist", f"give the path of {WHAT[name]}")
            return ""
        except OSError as exc:
            self.problem(
                name,
                f"{path} cannot be reached ({exc.strerror})",
                f"let user {user} reach it (the folders on its path)",
            )
            return ""
        if not stat.S_ISREG(mode):
            self.problem(name, f"{path} is not a file", f"give the path of {WHAT[name]}")
            return ""
        if secret and mode & 0o077:
            self.problem(
                name,
                f"{path} is mode {stat.S_IMODE(mode):04o}: users other than its owner may "
                "read or change the private key",
                f"chmod 600 {path}",
            )
            return ""
        try:
            return path.read_bytes().decode("utf-8")
        except PermissionError:
            fix = f"chown {user} {path}" if secret else f"chmod 644 {path}"
            self.problem(
                name,
                f"{path} cannot be read by user {user} (permission denied)",
                f"let the user pxeserver runs as read it: {fix}",
            )
        except UnicodeDecodeError:
            self.problem(name, f"{path} is not a PEM file (not text)", f"give {WHAT[name]}")
        except OSError as exc:
            self.problem(name, f"{path} cannot be read ({exc.strerror})", "check the file")
        return ""

    def certificates(self, path: Path, text: str, name: str) -> list[Any]:
        from cryptography import x509

        if not text:
            return []
        try:
            return list(x509.load_pem_x509_certificates(text.encode()))
        except ValueError:
            self.problem(
                name,
                f"{path} holds no PEM certificate",
                f"give {WHAT[name]}: it begins with -----BEGIN CERTIFICATE-----",
            )
            return []

    def client_certificate(self, path: Path, cert: Any, authorities: list[Any], ca: Path) -> None:
        from cryptography import x509
        from cryptography.x509.oid import ExtendedKeyUsageOID

        after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
        renew = f"renew it (signed by a CA etcd trusts) and put the new one at {path}"
        if after < self.now:
            self.problem("etcd_cert", f"{path} expired on {_day(after)}", renew)
        elif before > self.now:
            self.problem(
                "etcd_cert",
                f"{path} is valid only from {_day(before)} (this host's clock says "
                f"{_day(self.now)})",
                "check this host's clock",
            )
        elif after - self.now < EXPIRY_WARNING:
            self.problem(
                "etcd_cert",
                f"{path} expires on {_day(after)}",
                renew + "; pxeserver reads it at start",
                warning=True,
            )
        try:
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        wanted = {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
        if usage is not None and not wanted & set(usage):
            self.problem(
                "etcd_cert",
                f"{path} is not for client authentication (its extended key usage "
                "lacks clientAuth), and etcd refuses it",
                "issue it with extendedKeyUsage = clientAuth",
            )
        if authorities and not any(_signed_by(cert, a) for a in authorities):
            self.problem(
                "etcd_cert",
                f"{path} is not signed by a CA in {ca}",
                "fine if etcd's --trusted-ca-file holds its issuer; if not, etcd refuses it",
                warning=True,
            )

    def private_key(self, path: Path, text: str, cert_path: Path, cert: Any) -> None:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except TypeError:
            self.problem(
                "etcd_key",
                f"{path} is encrypted with a passphrase, which nothing could type at start",
                f"write it unencrypted: openssl pkey -in {path} -out NEW.key, then "
                "chmod 600 NEW.key and name that",
            )
            return
        except (ValueError, UnsupportedAlgorithm):
            self.problem(
                "etcd_key",
                f"{path} holds no PEM private key",
                f"give {WHAT['etcd_key']}: it begins with -----BEGIN … PRIVATE KEY-----",
            )
            return
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
            self.problem(
                "etcd_key",
                f"{path} is not the key of {cert_path}",
                "give the key that certificate was made for",
            )


def _signed_by(cert: Any, authority: Any) -> bool:
    try:
        cert.verify_directly_issued_by(authority)
    except Exception:  # noqa: BLE001 - any failure means "not this issuer"
        return False
    return True


def _user() -> str:
    """Who this process runs as (not $USER: that stays root's after a switch of user)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _day(when: datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M} UTC"
