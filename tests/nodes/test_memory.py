"""Known machines answered from memory (issue 13, item 1): an HTTP worker's boot policy
with its view, step log and answers, over a real SQLite store and a real etcd.

A counting store proves that a known node's ``/ipxe`` and ``/cloud-config`` make no
store call; the steps they answered are in the step log and the recorder writes them.
An operator's change reaches the next answer of the worker that made it at once, and
another worker's (another server's, with etcd) one look of its view later.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from pxeserver import daemon
from pxeserver.boot import BootService
from pxeserver.config import Settings
from pxeserver.errors import StoreUnavailable
from pxeserver.model import MAC, EventKind, Machine, State
from pxeserver.nodes.steps import StepReader
from pxeserver.nodes.view import NodeView
from pxeserver.store import Head
from pxeserver.store.sqlite import SQLiteStore
from pxeserver.web import create_app

from ..support.fakes import CountingStore
from ..support.net import wait_for
from ..support.settings import make_settings
from ..support.web import config_path, fetch_config

BASE = "http://192.0.2.1:8080"
KNOWN = MAC.parse("52:54:00:13:00:01")
NEW = MAC.parse("52:54:00:13:00:02")
ADDRESS = "192.0.2.7"  # the machine's, for its script and its config


def secret_in(script: str) -> str:
    """The one-time secret of the config URL an iPXE script names."""
    return dict(parse_qsl(urlsplit(config_path(script)).query))["secret"]


def worker(settings: Settings) -> tuple[BootService, CountingStore]:
    """An HTTP worker's boot policy over a store that counts its calls."""
    counting = CountingStore(daemon.make_store(settings))
    service = daemon.make_service(settings, counting, worker=True)  # type: ignore[arg-type]
    return service, counting


@pytest.fixture
def served(backend: Settings) -> Iterator[tuple[BootService, CountingStore]]:
    service, counting = worker(backend)
    yield service, counting
    service.close()


def knows(service: BootService, mac: MAC, **fields: Any) -> bool:
    """The worker's view follows the store and has ``mac`` with ``fields``."""
    view = service.memory.view
    assert view is not None
    node = view.get(mac) if view.live else None
    return node is not None and all(getattr(node, k) == v for k, v in fields.items())


def steps(settings: Settings) -> list[tuple[MAC, EventKind]]:
    reader = StepReader(daemon.steps_folder(settings))
    try:
        return [(mac, change.kind) for mac, change in reader.read()]
    finally:
        reader.close()


def test_a_known_node_is_answered_with_no_store_call(
    backend: Settings, served: tuple[BootService, CountingStore]
) -> None:
    service, counting = served
    service.ipxe_script(Machine(KNOWN), BASE)  # first sight: created in the store
    wait_for(lambda: knows(service, KNOWN), 10, "the view to know the node")
    counting.calls.clear()
    app = create_app(backend, service).test_client()
    for _ in range(3):
        script = service.ipxe_script_from_memory(Machine(KNOWN, arch="x86_64"), BASE, ADDRESS)
        assert script is not None and f"cloud-config?mac={KNOWN}" in script
        config = service.cloud_config_from_memory(KNOWN, BASE, ADDRESS, secret_in(script))
        assert config is not None and "node-001" in config
        assert fetch_config(app, str(KNOWN)).status_code == 200  # the Flask views too
    assert dict(counting.calls) == {}, "a known node's answers asked the store"
    # positive control: a machine the view does not know needs the store
    assert service.ipxe_script_from_memory(Machine(NEW), BASE) is None
    service.ipxe_script(Machine(NEW), BASE)
    assert counting.calls["get"] >= 1 and counting.calls["create"] == 1
    # what was answered from memory was noted, for the main process to write
    noted = steps(backend)
    assert noted.count((KNOWN, EventKind.IPXE)) == 6
    assert noted.count((KNOWN, EventKind.CLOUD_CONFIG)) == 6
    assert (NEW, EventKind.IPXE) not in noted  # written at once, with the node


def test_the_recorder_writes_what_the_workers_noted(
    backend: Settings, served: tuple[BootService, CountingStore]
) -> None:
    service, _ = served
    service.ipxe_script(Machine(KNOWN), BASE)
    wait_for(lambda: knows(service, KNOWN), 10, "the view to know the node")
    script = service.ipxe_script_from_memory(Machine(KNOWN, platform="efi"), BASE, ADDRESS)
    assert script is not None
    assert service.cloud_config_from_memory(KNOWN, BASE, ADDRESS, secret_in(script))
    main = daemon.make_service(backend)  # the main process's registry
    recorder = daemon.make_recorder(backend, main.registry)
    try:
        assert recorder.drain(10)
        node = main.node(KNOWN)
        assert [e.kind for e in node.events] == [EventKind.IPXE] * 2 + [EventKind.CLOUD_CONFIG]
        assert node.state is State.CONFIGURED and node.boot_count == 2
        assert node.platform == "efi" and node.ip == "192.0.2.7"
        assert steps(backend) == []  # done: not read again
        # ... and the worker's view has it one look later (its next answer's facts)
        wait_for(lambda: knows(service, KNOWN, state=State.CONFIGURED), 10, "the view")
    finally:
        recorder.stop()
        main.close()


def profile_in(script: str | None) -> str:
    assert script is not None
    return script.split("boots profile ", 1)[1].split("\n", 1)[0].strip("'")


def test_an_operator_change_reaches_the_next_answer_of_every_worker(backend: Settings) -> None:
    """Two workers (two servers, with etcd): the change is in the next answer of the
    worker that made it, and in the other's once its view looked (within 20 ms for
    SQLite, one watch delivery for etcd; the test waits for it, not for a time)."""
    a, _ = worker(backend)
    b, _ = worker(backend)
    try:
        a.ipxe_script(Machine(KNOWN), BASE)
        wait_for(lambda: knows(b, KNOWN), 10, "the other worker's view to know the node")
        assert profile_in(b.ipxe_script_from_memory(Machine(KNOWN), BASE)) == "coreos"
        a.set_node(KNOWN, profile="flatcar")
        assert profile_in(a.ipxe_script_from_memory(Machine(KNOWN), BASE)) == "flatcar"
        wait_for(lambda: knows(b, KNOWN, profile="flatcar"), 10, "the change to reach b")
        for _ in range(5):  # and it stays
            assert profile_in(b.ipxe_script_from_memory(Machine(KNOWN), BASE)) == "flatcar"
        a.set_node(KNOWN, labels={"rack": "r9"}, reinstall=True)
        wait_for(lambda: knows(b, KNOWN, labels={"rack": "r9"}), 10, "the labels to reach b")
        b.forget(KNOWN)
        wait_for(lambda: a.memory.view is not None and a.memory.view.get(KNOWN) is None, 10,
                 "the forgetting to reach a")  # fmt: skip
        assert a.ipxe_script_from_memory(Machine(KNOWN), BASE) is None  # unknown again
    finally:
        a.close()
        b.close()


class FailingFeed:
    """A feed whose store stops answering once ``down`` is set."""

    def __init__(self) -> None:
        self.down = threading.Event()

    def snapshot(self) -> tuple[list[Head], int]:
        if self.down.is_set():
            raise StoreUnavailable("switched off")
        return [Head(KNOWN, 1, json.dumps({"mac": KNOWN.value}))], 1

    def follow(self, cursor: int, deliver: Any, stopping: threading.Event) -> None:
        while not stopping.wait(0.01):
            if self.down.is_set():
                raise StoreUnavailable("switched off")


def test_a_view_that_does_not_follow_the_store_is_not_asked() -> None:
    feed = FailingFeed()
    journal_empty = threading.Event()
    journal_empty.set()
    view = NodeView(feed, journal_empty=journal_empty.is_set)
    assert not view.live  # not started: nothing read yet
    view.start()
    try:
        wait_for(lambda: view.live, 10, "the view to read the store")
        assert view.get(KNOWN) is not None
        journal_empty.clear()  # writes wait in the journal: the store is behind
        wait_for(lambda: not view.live, 10, "the view to see the journal")
        journal_empty.set()
        wait_for(lambda: view.live, 10, "the view to follow again")
        feed.down.set()
        wait_for(lambda: not view.live, 10, "the view to see the store down")
        feed.down.clear()
        wait_for(lambda: view.live, 10, "the view to read the store again")
        assert view.resyncs >= 1
    finally:
        view.stop()


def test_a_worker_whose_view_is_not_live_reads_the_store(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    service, counting = worker(settings)
    try:
        service.ipxe_script(Machine(KNOWN), BASE)
        assert service.memory.view is not None
        service.memory.view.stop()  # as if the store stopped answering it
        assert service.ipxe_script_from_memory(Machine(KNOWN), BASE) is None
        counting.calls.clear()
        assert "coreos" in service.ipxe_script(Machine(KNOWN), BASE)
        assert counting.calls["get"] >= 1 and counting.calls["update"] == 1  # written now
        assert isinstance(counting.inner, SQLiteStore)
    finally:
        service.close()


def test_a_noted_step_is_the_step_with_its_time_and_id() -> None:
    """The copy Memory notes is dataclasses.replace's, field for field."""
    import dataclasses

    from pxeserver.nodes.memory import _noted
    from pxeserver.nodes.registry import Change

    change = Change(EventKind.IPXE, "profile x", Machine(KNOWN, ip=ADDRESS), move=False,
                    count_boot=True, installs="disk", config_issued=5)  # fmt: skip
    noted = _noted(change, 12.5, "abc")
    assert noted == dataclasses.replace(change, at=12.5, event_id="abc", answered=True)
    assert type(noted) is Change and noted is not change and change.at is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        noted.at = 1.0  # type: ignore[misc]
    assert vars(noted) == vars(dataclasses.replace(change, at=12.5, event_id="abc",
                                                   answered=True))  # fmt: skip
