"""A throw-away OpenPGP signing key for tests, made with the real gpg in a temp home."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class Signer:
    """``gpg --quick-gen-key`` in its own GNUPGHOME; signs files like Flatcar's buildbot."""

    def __init__(self, home: Path, name: str = "pxeserver test signer") -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        self.gpg(
            "--passphrase", "", "--quick-gen-key", f"{name} <signer@example.invalid>",
            "ed25519", "sign", "never",
        )  # fmt: skip
        colons = self.gpg("--with-colons", "--list-keys").stdout.decode()
        self.fingerprint = next(
            line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:")
        )

    def gpg(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--pinentry-mode", "loopback", *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def export(self, path: Path) -> Path:
        path.write_bytes(self.gpg("--armor", "--export", self.fingerprint).stdout)
        return path

    def sign(self, path: Path) -> Path:
        sig = path.with_name(path.name + ".sig")
        self.gpg("--yes", "--passphrase", "", "--detach-sign", "-o", str(sig), str(path))
        return sig

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], timeout=30)
