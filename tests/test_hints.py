"""pxeserver.hints: hints name the command the way it was run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pxeserver import hints


def test_the_program_is_named_as_it_was_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert hints.program(".venv/bin/pxeserver") == ".venv/bin/pxeserver"
    assert hints.program("/opt/pxeserver/bin/pxeserver") == "/opt/pxeserver/bin/pxeserver"
    # found on the PATH: the short name works
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pxeserver"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert hints.program(str(script)) == "pxeserver"
    # as a module: the same interpreter
    main = str(Path(hints.__file__).parent / "__main__.py")
    assert hints.program(main) == f"{hints._shortest(sys.executable)} -m pxeserver"
    # another program running our code (a test runner): the plain name
    assert hints.program("/usr/bin/pytest") == "pxeserver"


def test_a_command_is_the_program_and_its_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", [".venv/bin/pxeserver", "check"])
    assert hints.command("assets ipxe") == ".venv/bin/pxeserver assets ipxe"
