"""How the boot policy finds a machine's node and records its boot steps.

Plain (the CLI, tests that run the app in-process, the main process): the node is read
from the registry and each step written before the answer, as it always was. In
``serve``'s HTTP workers, with a view, a step log and the answers cache: a node the view
knows is answered from memory, without a store call, and its step is noted in the step
log and written behind the answer by the main process (:mod:`pxeserver.nodes.recorder`).
Everything else, and everything while the view does not follow the store, goes the
plain way.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .. import metrics
from ..model import MAC, Node, new_event_id
from ..render.answers import Answers
from .registry import Change, Registry
from .steps import StepLog
from .view import NodeView

log = logging.getLogger(__name__)

WAIT = object()  # "answering needs the store", from known() when it may not wait
Key = tuple[Any, ...]


class Memory:
    def __init__(
        self,
        registry: Registry,
        view: NodeView | None = None,
        steps: StepLog | None = None,
        answers: Answers | None = None,
    ) -> None:
        self.registry = registry
        self.view = view
        self.steps = steps if view is not None else None
        self.answers = answers if view is not None else None
        self._from_memory = metrics.boot_answers.labels(source="memory")
        self._from_store = metrics.boot_answers.labels(source="store")

    def wait_live(self, timeout: float) -> bool:
        """Wait until the view follows the store (a worker that starts answering from
        memory at once), at most ``timeout`` seconds; False if it does not yet."""
        if self.view is None:
            return False
        deadline = time.monotonic() + timeout
        while not self.view.live:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def start(self) -> None:
        if self.view is not None:
            self.view.start()

    def close(self) -> None:
        if self.view is not None:
            self.view.stop()
        if self.steps is not None:
            self.steps.close()

    def known(self, mac: MAC, may_wait: bool) -> tuple[Any, bool]:
        """The node (None: not registered) and whether it was answered from memory; or
        WAIT when the store would have to be asked and ``may_wait`` is False."""
        view = self.view
        if view is not None and view.live:
            node = view.get(mac)
            if node is not None:
                return node, True
        if not may_wait:
            return WAIT, False
        node = self.registry.get(mac)
        if node is not None:
            self.wrote(node)
        return node, False

    def record(self, mac: MAC, change: Change, from_memory: bool) -> Node | None:
        """A boot step: noted, to be written behind the answer, when the node was answered
        from memory (returns None); otherwise written now (returns the node)."""
        (self._from_memory if from_memory else self._from_store).inc()
        if self.steps is not None and from_memory:
            noted = _noted(change, time.time(), new_event_id())
            try:
                self.steps.note(mac, noted)
                return None
            except OSError as exc:
                log.warning("%s: cannot note %s in the step log (%s); writing it now",
                            mac, change.kind, exc)  # fmt: skip
        node = self.registry.apply(mac, change)
        self.wrote(node)
        return node

    def answer(self, kind: str, node: Node, base: str) -> tuple[Key | None, Any]:
        """The key of the answer of ``kind`` for ``node`` at ``base``, and the answer kept
        for it (None: render it, then :meth:`keep` it)."""
        if self.answers is None:
            return None, None
        key = self.answers.key(kind, node, base)
        return key, self.answers.get(key)

    def keep(self, key: Key | None, answer: Any) -> None:
        if key is not None and self.answers is not None:
            self.answers.put(key, answer)

    def wrote(self, node: Node) -> None:
        """``node`` as this process just wrote or read it from the store."""
        if self.view is not None:
            self.view.put(node)

    def forgot(self, mac: MAC) -> None:
        if self.view is not None:
            self.view.forget(mac)


def _noted(change: Change, at: float, event_id: str) -> Change:
    """``dataclasses.replace(change, at=at, event_id=event_id, answered=True)`` without its
    generic machinery (a step per answer): Change is a plain frozen dataclass, its fields
    in ``__dict__``, no ``__post_init__``."""
    noted = object.__new__(Change)
    noted.__dict__.update(change.__dict__, at=at, event_id=event_id, answered=True)
    return noted
