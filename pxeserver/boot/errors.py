"""The boot policy's own error."""

from __future__ import annotations

from ..errors import NotFound
from ..profiles import Verdict


class NoMatch(NotFound):
    """No group selects this machine and there is no default group: ignore it.
    ``verdicts`` says how every group fared, for explaining."""

    def __init__(self, message: str, verdicts: tuple[Verdict, ...] = ()) -> None:
        super().__init__(message)
        self.verdicts = verdicts
