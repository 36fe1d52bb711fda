"""How a hint names the ``pxeserver`` command: the way this process was started.

A hint that says ``pxeserver assets ipxe`` to someone who ran ``.venv/bin/pxeserver``
names a command their shell does not find. So hints name the program as it was run: the
path typed (``.venv/bin/pxeserver``, ``/opt/pxeserver/bin/pxeserver``), plain
``pxeserver`` when that is what the PATH finds, ``python -m pxeserver`` with the same
interpreter when run as a module.
"""

from __future__ import annotations

import os
import shutil
import sys

NAME = "pxeserver"


def program(argv0: str | None = None) -> str:
    """The pxeserver command as this process was started (``argv0``: ``sys.argv[0]``)."""
    argv0 = sys.argv[0] if argv0 is None and sys.argv else (argv0 or "")
    base = os.path.basename(argv0)
    if base == "__main__.py" and os.path.basename(os.path.dirname(argv0)) == NAME:
        return f"{_shortest(sys.executable)} -m {NAME}"
    if not base.startswith(NAME):  # another program runs our code (a test runner)
        return NAME
    found = shutil.which(base)
    if found and os.path.isabs(argv0) and os.path.realpath(found) == os.path.realpath(argv0):
        return base  # the PATH finds this very program
    return argv0


def command(words: str) -> str:
    """``words`` (``assets ipxe``) as a command to type: ``.venv/bin/pxeserver assets ipxe``."""
    return f"{program()} {words}"


def _shortest(path: str) -> str:
    """``path`` relative to the working folder if it is below it, else as it is."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative
