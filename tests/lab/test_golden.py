"""``python -m tests.lab.golden``: the tool that turns a lab capture into golden files says
how to call it (without arguments it was an IndexError traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import HERE


def golden(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tests.lab.golden", *args]
    return subprocess.run(
        command, cwd=HERE.parent.parent, capture_output=True, text=True, timeout=60
    )


def test_without_arguments_it_prints_its_usage(tmp_path: Path) -> None:
    out = golden()
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("usage: python -m tests.lab.golden [-h] capture out\n")
    out = golden(str(tmp_path / "none.pcap"), str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.splitlines()[-1].endswith(
        f"{tmp_path / 'none.pcap'} is not a file: give a capture the lab wrote (dhcp.pcap)"
    )
    assert golden("--help").returncode == 0  # the positive control: it does run
