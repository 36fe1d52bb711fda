"""``scripts/setup`` says what it waits for, and what to do when it cannot install.

Run on a copy of the scripts, with stand-ins for pip and for the programs that would
change this machine (``.venv/bin/python`` and ``.venv/bin/pxeserver`` are stubs that say
they ran; ``dpkg-query`` and ``id`` are stubs where a test needs a missing package or a
user who is not root): installing for real takes minutes and changes the machine, which
``scripts/test`` itself does at the start of every run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .support.settings import REPO

STUB = '#!/bin/sh\necho "STUB $(basename "$0") $*" >&2\n'


def checkout(tmp_path: Path) -> Path:
    """The setup scripts and package lists in a folder of their own, with a .venv of stubs."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    for name in ("setup", "apt-install", "packages-serve.txt", "packages-test.txt"):
        shutil.copy2(REPO / "scripts" / name, root / "scripts" / name)
    for stub in ("python", "pxeserver"):
        path = root / ".venv" / "bin" / stub
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STUB)
        path.chmod(0o755)
    return root


def tools(tmp_path: Path, **stubs: str) -> str:
    """A PATH with the few programs setup uses, some of them stubs, and no sudo."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash", "env", "grep", "tr", "sed", "sort", "dirname", "basename", "dpkg-query",
                 "id", "cat"):  # fmt: skip
        found = shutil.which(name)
        assert found, name
        (bin_dir / name).symlink_to(found)
    for name, text in stubs.items():
        (bin_dir / name).unlink(missing_ok=True)
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def setup(root: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "scripts/setup", "serve"], cwd=root, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PATH": path})  # fmt: skip


def test_setup_says_what_pip_is_doing_before_it_runs(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    installed = '#!/bin/sh\nprintf "install ok installed"\n'  # every package is there
    out = setup(root, tools(tmp_path, **{"dpkg-query": installed}))
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    pip = next(i for i, line in enumerate(lines) if line.startswith("STUB python -m pip install"))
    assert lines[pip - 1] == (
        "setup: installing pxeserver and its Python packages into .venv (pip; a minute or two "
        "the first time, seconds after)"
    ), lines
    assert lines[pip + 1] == "STUB pxeserver assets ipxe --target tftproot"


def test_without_root_and_without_sudo_setup_says_what_to_run(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    path = tools(tmp_path, **{"dpkg-query": "#!/bin/sh\nexit 1\n", "id": "#!/bin/sh\necho 1000\n"})
    out = setup(root, path)
    assert out.returncode == 1
    missing = " ".join(
        sorted(
            word
            for line in (root / "scripts" / "packages-serve.txt").read_text().splitlines()
            if not line.lstrip().startswith("#")
            for word in line.split()
        )
    )
    assert out.stderr == (
        f"setup: the Debian packages {missing} are missing and installing them needs root: run "
        f"scripts/setup serve as root, or as root: apt-get install {missing}\n"
    )
