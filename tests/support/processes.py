"""Processes as /proc shows them, for tests that check what a server leaves behind."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> dict[int, str]:
    """The child processes of ``pid``: pid → start time (so a reused pid is not taken)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found[int(child)] = started(int(child))
    return found


def started(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has ended; only its parent's wait is missing
        return ""
    return fields[19]  # field 22 of stat: start time in clock ticks after boot


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "(gone)"
