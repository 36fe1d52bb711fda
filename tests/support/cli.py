"""The ``pxeserver`` command, run as an operator would, and a settings file to give it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def run(*args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pxeserver", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def write(tmp_path: Path, raw: dict) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "pxeserver.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
