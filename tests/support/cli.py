"""The ``pxeserver`` command, run as an operator would, and a settings file to give it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml


def run(
    *args: str, cwd: Path, check: bool = False, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``pxeserver ARGS`` in ``cwd``; ``env`` replaces the variables it names (and only
    those: PXESERVER_* of the test runner's own environment are left out)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PXESERVER_")}
    return subprocess.run(
        [sys.executable, "-m", "pxeserver", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def write(tmp_path: Path, raw: dict) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "pxeserver.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
