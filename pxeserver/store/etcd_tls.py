"""The etcd store's TLS (:class:`ClientTls`): python-etcd3's arguments from the files of
the settings (``store.etcd_ca``, ``etcd_cert``, ``etcd_key``, checked when they load), and
what a failed handshake means, as a sentence that names the file to fix.

gRPC cannot tell which side gave up a handshake. A server certificate the CA did not
sign fails on this side (``CERTIFICATE_VERIFY_FAILED``), and so does one made for another
host (``Hostname Verification Check failed``). A client certificate etcd does
not accept, or none where etcd asks for one, shows as the connection dropped right after
the handshake (``Unwrap failed``, ``TSI_DATA_CORRUPTED``: etcd sends its alert after a
TLS 1.3 handshake), so the sentence says what was configured. A plain-HTTP etcd closes
the connection during the handshake (``Handshake read failed``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreUnavailable

# How gRPC says that a TLS handshake failed (its details, BoringSSL's words).
HANDSHAKE_FAILED = (
    "handshake",
    "TSI_",
    "SSL_ERROR",
    "CERTIFICATE_VERIFY_FAILED",
    "Verification Check failed",
)


def handshake_failed(detail: str) -> bool:
    return any(m.lower() in detail.lower() for m in HANDSHAKE_FAILED)


@dataclass(frozen=True)
class ClientTls:
    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def arguments(self) -> dict[str, str]:
        """python-etcd3's TLS arguments. It reads the files when it makes a client; one
        gone since the settings were checked is the store unavailable, with its name."""
        files = {"ca_cert": self.ca, "cert_cert": self.cert, "cert_key": self.key}
        for path in files.values():
            if path is not None and not os.access(path, os.R_OK):
                raise StoreUnavailable(
                    f"etcd: cannot read {path}, a TLS file of the settings; restore it"
                )
        return {name: str(path) for name, path in files.items() if path is not None}

    def failure(self, detail: str) -> str:
        """A failed handshake (gRPC's ``detail``) as a sentence: what to fix, and how."""
        if "CERTIFICATE_VERIFY_FAILED" in detail:
            why = detail.rpartition("CERTIFICATE_VERIFY_FAILED")[2].removesuffix(": OK")
            why = why.strip(": ") or "refused"
            return (
                f"etcd's server certificate does not verify against the CA in {self.ca} "
                f"(store.etcd_ca: {why}): set store.etcd_ca to the CA that signed etcd's "
                "certificate, one that names this endpoint's host"
            )
        if "Hostname Verification Check failed" in detail:
            return (
                "etcd's server certificate does not name this URL's host: write the URL with "
                "a name or address its subjectAltName holds, or give etcd a certificate for "
                "this one"
            )
        if "TSI_DATA_CORRUPTED" in detail or "Unwrap failed" in detail:
            if self.cert is None:
                return (
                    "etcd closed the TLS connection: it asks for a client certificate "
                    "(--client-cert-auth); set store.etcd_cert and store.etcd_key"
                )
            return (
                f"etcd closed the TLS connection: it did not accept the client "
                f"certificate {self.cert} (store.etcd_cert); give one signed by a CA in "
                "etcd's --trusted-ca-file, for clientAuth, and not expired"
            )
        if "Handshake read failed" in detail:
            return (
                f"no TLS handshake ({detail}): does etcd serve TLS on this URL? If it "
                "serves plain HTTP, write http:// and drop store.etcd_ca/cert/key"
            )
        return f"the TLS handshake with etcd failed ({detail}); check store.etcd_ca/cert/key"
