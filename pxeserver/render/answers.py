"""Rendered answers kept for the next identical request.

What a machine is served (its iPXE script, its cloud-config) is a pure function of its
record's head, the facts its request carries, the base URL it used, the settings and the
templates. A boot storm, a machine in a retry loop and a benchmark all ask for the same
answer many times; rendering and validating a cloud-config costs about a millisecond.
So an HTTP worker keeps the answers it rendered, keyed by exactly those inputs
(:meth:`Answers.key`), and serves a kept one while none of them changed: an operator's
change to a node changes its head, and so the key. The settings do not change while a
worker runs. Templates may (Jinja reloads them): the key carries a stamp of the
templates folder, read at most once a ``STAMP_S``, so an edited template is served
within that long. A node's ``boot_count`` is in the key only if some template or kernel
argument names it (it changes at every boot).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..model import Node

STAMP_S = 1.0
KEEP = 4096  # answers per kind kept (the most recently rendered)


class Answers:
    def __init__(self, settings: Settings, keep: int = KEEP) -> None:
        self.folder = Path(settings.paths.templates_dir)
        self.args_name_boot_count = any(
            "boot_count" in arg for p in settings.profiles.values() for arg in p.args
        )
        self.keep = keep
        self._kept: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()
        self._stamp: tuple[int, bool] = (0, True)
        self._stamped_at = float("-inf")
        self.hits = self.misses = 0

    def _templates(self) -> tuple[int, bool]:
        """A number that changes when a template file changes, and whether any template
        names ``boot_count``; looked at once a STAMP_S at most."""
        now = time.monotonic()
        if now - self._stamped_at < STAMP_S:
            return self._stamp
        stamp, names = 0, self.args_name_boot_count
        for root, _, files in os.walk(self.folder):
            for name in files:
                path = os.path.join(root, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                stamp = hash((stamp, name, info.st_mtime_ns, info.st_size))
                if not names:
                    names = _names_boot_count(path)
        self._stamp, self._stamped_at = (stamp, names), now
        return self._stamp

    def key(self, kind: str, node: Node, base: str) -> tuple[Any, ...]:
        """Everything the answer of ``kind`` for ``node`` (facts of the request merged
        in) at ``base`` is made from, besides the settings."""
        stamp, counted = self._templates()
        labels: Hashable = tuple(sorted(node.labels.items())) if node.labels else ()
        return (kind, base, stamp, node.mac, node.hostname, node.uuid, node.arch,
                node.platform, node.ip, node.profile, labels, node.token, node.installed,
                node.installed_at, node.boot_count if counted else None)  # fmt: skip

    def get(self, key: tuple[Any, ...]) -> Any:
        found = self._kept.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: tuple[Any, ...], answer: Any) -> None:
        with self._lock:
            if len(self._kept) >= self.keep * 2:  # two kinds
                self._kept.pop(next(iter(self._kept)))
            self._kept[key] = answer


def _names_boot_count(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"boot_count" in f.read()
    except OSError:
        return True  # unreadable now: assume it may
