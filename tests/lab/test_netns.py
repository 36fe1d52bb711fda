"""Namespaces a killed run leaves behind are deleted by the next run that makes one."""

from __future__ import annotations

import os

import pytest

from .netns import NETNS_DIR, OWNERS_DIR, Namespace, missing_support, sweep_orphans

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def test_a_namespace_whose_maker_died_is_swept_and_a_live_ones_is_not() -> None:
    if (why := missing_support()) is not None:
        pytest.fail(why)
    alive, orphan = Namespace(f"pxtest-a{os.getpid()}"), Namespace(f"pxtest-o{os.getpid()}")
    alive.create()
    orphan.create()
    try:
        # As a run killed before its teardown leaves it: made by a process that is gone.
        (OWNERS_DIR / orphan.name).write_text("999999999 1")
        swept = sweep_orphans()
        assert orphan.name in swept and not (NETNS_DIR / orphan.name).exists()
        assert alive.name not in swept and (NETNS_DIR / alive.name).exists()  # the control
    finally:
        orphan.delete()
        alive.delete()
