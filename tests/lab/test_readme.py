"""The README's shell blocks, run as written, on a machine where ``scripts/serve`` runs.

Found by a new user following the README literally: "See a machine boot", pasted at once
while ``scripts/serve`` ran, started a second server on the same port (it shared it),
ran ``demo`` before its server listened, and mixed the server's log into the demo's; the
demo then boot-looped on the other server's missing Flatcar kernel.

The blocks are read from README.md at test time, so the README stays true: each block
under a heading listed in :data:`RUN` runs in bash, line by line as a paste would, with
``-e -o pipefail`` (a line that fails fails the test), in a copy of the checkout (the
same .venv) and in a network namespace of its own, so that the README's fixed ports
(8080, 6969, 8081) and its ``./var`` are this test's alone. ``scripts/serve`` itself is
not run (it installs; ``scripts/test`` has just done that): its server is, started with
the arguments ``scripts/serve`` gives it. The blocks of :data:`NOT_RUN` say why not.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

from ..support.settings import REPO

RUN = ("A tour", "See a machine boot")
NOT_RUN = {
    "Two commands": "scripts/test is this suite; scripts/serve is what the other blocks run "
    "beside (its server is started here as scripts/serve starts it)",
    "Flatcar images": "downloads from the internet (tests/commands/test_flatcar.py runs the "
    "command against a local server)",
    "Running it": "needs a container engine or systemd (tests/serve/test_deploy.py checks "
    "these files and commands)",
}


def shell_blocks(text: str) -> dict[str, list[str]]:
    """The ``sh`` blocks of a Markdown text, by the ``##`` heading they are under."""
    found: dict[str, list[str]] = {}
    heading, block = "", None
    for line in text.splitlines():
        if block is not None:
            if line.startswith("```"):
                found.setdefault(heading, []).append("\n".join(block))
                block = None
            else:
                block.append(line)
        elif line.startswith("```sh"):
            block = []
        elif line.startswith("## "):
            heading = line[3:].strip()
    return found


def test_every_shell_block_of_the_readme_is_run_or_says_why_not() -> None:
    blocks = shell_blocks((REPO / "README.md").read_text())
    assert set(blocks) == set(RUN) | set(NOT_RUN), sorted(blocks)
    assert len(blocks["A tour"]) == 1 and len(blocks["See a machine boot"]) == 1


def serve_arguments() -> list[str]:
    """What ``scripts/serve`` runs ``pxeserver serve`` with when given no arguments."""
    found = re.search(r"^\s*set -- (.+)$", (REPO / "scripts" / "serve").read_text(), re.M)
    assert found, "scripts/serve no longer sets its default arguments with `set --`"
    return shlex.split(found.group(1))


def checkout(tmp_path: Path, node_image: Path) -> Path:
    """A copy of the checkout's files (git ls-files), with this one's .venv, boot loaders
    and node image, as a new user has them after scripts/setup and build-node-image.sh."""
    root = tmp_path / "checkout"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    (root / ".venv").symlink_to(REPO / ".venv")
    for loader in ("undionly.kpxe", "ipxe.efi", "snponly.efi"):
        shutil.copy2(REPO / "tftproot" / loader, root / "tftproot" / loader)
    cache = root / "tests" / "lab" / ".cache"
    cache.mkdir(parents=True)
    (cache / "node-image").symlink_to(node_image)  # build-node-image.sh finds it current
    return root


SCRIPT = """\
set -u
ip link set lo up
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
.venv/bin/pxeserver serve {serve} >scripts-serve.log 2>&1 &
serve=$!
for _ in $(seq 300); do curl -s -o /dev/null localhost:8080/healthz && break; sleep 0.1; done
echo "=== A tour"
bash -e -o pipefail <<'BLOCK'
{tour}
BLOCK
echo "=== tour exit $?"
echo "=== See a machine boot"
bash -e -o pipefail <<'BLOCK'
{boot}
wait  # what the block's last line stopped
BLOCK
echo "=== boot exit $?"
kill $serve
wait $serve
echo "=== scripts/serve exit $?"
"""


def test_the_readme_blocks_work_pasted_as_written(
    tmp_path: Path, node_image: Path, lab_support: None
) -> None:
    blocks = shell_blocks((REPO / "README.md").read_text())
    root = checkout(tmp_path, node_image)
    script = SCRIPT.format(serve=shlex.join(serve_arguments()), tour=blocks["A tour"][0],
                           boot=blocks["See a machine boot"][0])  # fmt: skip
    proc = subprocess.Popen(["unshare", "--net", "bash", "-c", script], cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    serve_log = (root / "scripts-serve.log").read_text(errors="replace")
    demo_log = root / "tests" / "lab" / ".cache" / "demo.log"
    why = f"{out}\n--- scripts/serve:\n{serve_log[-3000:]}"
    assert "=== tour exit 0" in out, why
    assert "=== boot exit 0" in out, why
    assert "=== scripts/serve exit 0" in out, why
    tour = out.split("=== A tour")[1].split("=== tour exit")[0]
    assert re.search(r"^52:54:00:12:34:56 +node-001 .* configured ", tour, re.M), tour
    assert "52:54:00:12:34:56 node-001: label rack=r1" in tour
    boot = out.split("=== See a machine boot")[1]
    assert re.search(r"demo: node-\d+ \(52:54:00:[0-9a-f:]+\) is ready", boot), why
    assert "console   step=ready" in boot, why
    # The demo's server logged to its own file, not into the demo's output, and stopped.
    log = demo_log.read_text(errors="replace")
    assert "pxeserver stopped" in log and "Traceback" not in log, log
    assert "Granian" not in boot and "pxeserver.daemon" not in boot, boot
