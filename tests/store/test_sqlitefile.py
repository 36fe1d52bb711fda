"""The SQLite files pxeserver keeps (the store, the node cache, the journal): each is
readable by pxeserver's user only, with its -wal and -shm files, also when an earlier
version left it readable by others."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeserver.model import MAC, EventKind, Node
from pxeserver.nodes.cache import NodeCache
from pxeserver.nodes.journal import Journal
from pxeserver.nodes.registry import Change
from pxeserver.store.sqlite import SQLiteStore

NODE = Node(mac=MAC.parse("52:54:00:00:66:01"), hostname="node-001")


def write_store(path: Path) -> Any:
    store = SQLiteStore(path)
    store.create(NODE, lambda i: f"node-{i:03d}")
    return store


def write_cache(path: Path) -> Any:
    cache = NodeCache(path)
    cache.put(NODE)
    return cache


def write_journal(path: Path) -> Any:
    journal = Journal(path)
    change = Change(EventKind.IPXE, "profile p", at=1.0, event_id="e1")
    journal.append(NODE.mac, change, creates=True)
    return journal


FILES: dict[str, Callable[[Path], Any]] = {
    "store": write_store,
    "cache": write_cache,
    "journal": write_journal,
}

OPEN: dict[str, Callable[[Path], Any]] = {
    "store": SQLiteStore,
    "cache": NodeCache,
    "journal": Journal,
}


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most services run with, which leaves new files readable by everyone."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(path: Path) -> dict[str, int]:
    return {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in path.parent.iterdir()
        if p.name.startswith(path.name)
    }


@pytest.mark.parametrize("kind", FILES)
def test_each_file_and_its_wal_and_shm_are_0600(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.db"
    opened = FILES[kind](path)
    try:
        found = modes(path)  # while it is open: the -wal and -shm files exist
    finally:
        opened.close()
    assert set(found) == {path.name, f"{path.name}-wal", f"{path.name}-shm"}, found
    assert found == dict.fromkeys(found, 0o600)


@pytest.mark.parametrize("kind", FILES)
def test_a_file_left_readable_by_an_earlier_run_is_narrowed(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.db"
    FILES[kind](path).close()
    for name in (path.name, f"{path.name}-wal"):
        (tmp_path / name).touch()
        os.chmod(tmp_path / name, 0o644)
    assert modes(path)[path.name] == 0o644  # the control: as an earlier version left it
    OPEN[kind](path).close()
    assert modes(path) == dict.fromkeys(modes(path), 0o600)
