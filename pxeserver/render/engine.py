"""The real cloud-config engine as a judge: ``coreos-cloudinit -validate``, where its binary
exists. :mod:`pxeserver.render.cloudconfig` holds pxeserver's own checks, which the tests keep
in agreement with this report; ``pxeserver check`` shows it beside them.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

ENGINE = "coreos-cloudinit"
_ENTRY = re.compile(r"\bline (\d+): (error|warning|info): (.*)$")


@dataclass(frozen=True)
class EngineEntry:
    """One line of ``coreos-cloudinit -validate``'s report."""

    line: int
    kind: str  # error, warning or info
    message: str

    @property
    def rejects(self) -> bool:
        """Whether the entry means the config would not be applied as written: every
        error and warning but a deprecation (``etcd2`` and ``fleet`` are deprecated keys
        to coreos-cloudinit v1.14; they are what a fleet node runs)."""
        return self.kind != "info" and not self.message.startswith("deprecated key")

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.message}"


def engine_report(text: str, binary: str = ENGINE, timeout: float = 30) -> list[EngineEntry]:
    """Run the real ``coreos-cloudinit -validate`` on ``text``; its report's entries.
    Raises OSError when the binary cannot run, RuntimeError when it fails otherwise."""
    proc = subprocess.run(
        [binary, "-validate", "-from-file", "/dev/stdin"],
        input=text,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    entries = [
        EngineEntry(int(m[1]), m[2], m[3].strip())
        for m in (_ENTRY.search(ln) for ln in output.splitlines())
        if m
    ]
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not entries):
        detail = output.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{binary} -validate failed ({proc.returncode}): {detail[0]}")
    return entries
