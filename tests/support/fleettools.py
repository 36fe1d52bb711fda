"""The real fleet v1 tools, built from the shared third_party sources for the tests.

``tests/lab/build-fleet-tools.sh`` builds fleetd, fleetctl and coreos-cloudinit (cached in
tests/lab/.cache/fleet-tools, rebuilt when an input changes). They are fixtures, never
part of pxeserver: the lab's node images run them, and the suite judges every config the
shipped templates render with ``coreos-cloudinit -validate``.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tests" / "lab" / "build-fleet-tools.sh"


@functools.cache
def fleet_tools() -> Path:
    """The folder with fleetd, fleetctl and coreos-cloudinit; built on first use.
    A failed build raises with the script's own error lines (what is missing, what to do)."""
    out = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{BUILD.relative_to(REPO)} failed:\n{out.stderr.strip()}")
    return Path(out.stdout.strip().splitlines()[-1])
