"""The node image's serial console: its ``PXELAB step=…`` lines, parsed.

The lab's node image (a stand-in for CoreOS, see tests/lab/node/init) prints one line per
step: ``PXELAB step=NAME key=value key='quoted value' …`` (shell quoting).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

MARK = "PXELAB "


@dataclass(frozen=True)
class Step:
    name: str
    fields: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.fields[key]


def parse_line(line: str) -> Step | None:
    """One console line as a step, or None if it is not a well-formed step line."""
    at = line.find(MARK)
    if at < 0:
        return None
    try:
        words = shlex.split(line[at + len(MARK) :])
    except ValueError:
        return None  # a line cut short (the VM was stopped mid-write)
    fields = {}
    for word in words:
        key, sep, value = word.partition("=")
        if sep:
            fields[key] = value
    if "step" not in fields:
        return None
    return Step(fields.pop("step"), fields)


def read_steps(path: Path) -> list[Step]:
    if not path.exists():
        return []
    text = path.read_bytes().decode(errors="replace")
    return [s for s in (parse_line(ln) for ln in text.splitlines()) if s is not None]
