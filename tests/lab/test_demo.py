"""``pxeserver demo``: one VM on QEMU's user-mode network, against a running server.

No root and no namespace: this is what a new user runs. The server is a real
``pxeserver serve`` on loopback serving the lab's node image (a stand-in for CoreOS).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pxeserver.model import MAC

from ..support.server import ServerProcess
from .conftest import LAB_PROFILES
from .harness import link_or_copy, missing_tools

DEMO_MAC = "52:54:00:de:00:01"


def test_demo_boots_one_vm_to_ready(
    tmp_path: Path, node_image: Path, timings: dict[str, float]
) -> None:
    assert missing_tools() is None
    assets = tmp_path / "assets"
    (assets / "lab").mkdir(parents=True)
    for name in ("vmlinuz", "initrd.cpio.gz"):
        # A copy: pxeserver refuses assets that lead outside its assets folder.
        link_or_copy(node_image / name, assets / "lab" / name)
    settings = {
        "server": {"listen": "127.0.0.1", "dhcp": False, "tftp": False},
        "paths": {"data_dir": str(tmp_path / "var"), "assets_dir": str(assets)},
        "cluster": {"heartbeat_interval": 5},
        "profiles": LAB_PROFILES,
        "groups": [{"name": "default", "profile": "lab"}],
    }
    server = ServerProcess(tmp_path, settings=settings).start()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pxeserver", "demo", "--server", server.url,
             "--mac", DEMO_MAC, "--log-dir", str(tmp_path / "demo"), "--timeout", "300"],
            capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        why = f"{out.stdout}\n{out.stderr}\nserver log: {server.log_path}"
        assert out.returncode == 0, why
        node = server.json(f"/api/v1/nodes/{DEMO_MAC}")
        assert node["state"] == "ready", node
        assert f"demo: {node['hostname']} ({MAC.parse(DEMO_MAC)}) is ready" in out.stdout, why
        assert "console   step=ready" in out.stdout, why
        assert "registry  ready → ready" in out.stdout, why
        took = re.search(r"is ready ([0-9.]+) s after power-on", out.stdout)
        assert took is not None, why
        timings["BIOS, demo (user-mode network)"] = float(took.group(1))
    finally:
        server.stop()
    assert not qemu_pids(DEMO_MAC), "the demo left its QEMU running"


def qemu_pids(mac: str) -> list[int]:
    """QEMU processes whose command line names ``mac`` (read from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"qemu-system-x86_64")
            and any(f"mac={mac}".encode() in arg for arg in cmdline)
        ):
            found.append(int(proc.name))
    return found


def test_demo_against_a_server_whose_profile_cannot_boot_says_what_to_run(
    tmp_path: Path,
) -> None:
    """``scripts/serve``'s defaults boot Flatcar, whose kernel is not there before
    ``assets fetch flatcar``: the VM looped until the demo timed out, pointing at an empty
    console log. Now the demo says so as soon as the server has chosen the profile."""
    assert missing_tools() is None
    server = ServerProcess(tmp_path, args=["--no-dhcp", "--no-tftp", "--listen", "127.0.0.1"])
    server.start()
    mac = "52:54:00:de:00:02"
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pxeserver", "demo", "--server", server.url, "--mac", mac,
             "--log-dir", str(tmp_path / "demo"), "--timeout", "300"],
            capture_output=True, text=True, timeout=400, cwd=tmp_path,
        )  # fmt: skip
    finally:
        server.stop()
    program = f"{sys.executable} -m pxeserver"  # the demo as it was run (pxeserver.hints)
    why = f"{out.stdout}\n{out.stderr}"
    assert out.returncode == 1, why
    assert out.stdout.splitlines()[-1] == (
        f"demo: the server at {server.url} boots this machine with profile flatcar, but it has "
        "no flatcar/current/flatcar_production_pxe.vmlinuz, "
        "flatcar/current/flatcar_production_pxe_image.cpio.gz (404): the machine cannot boot "
        "it and would loop; for the demo, serve the lab's node image: "
        f"tests/lab/build-node-image.sh, then {program} serve --config tests/lab/demo.yaml &, "
        f"then {program} demo --server http://127.0.0.1:8081"
    )
    # the server said it too (with the MAC if the same HTTP worker served the script)
    assert " asked for flatcar/current/flatcar_production_pxe.vmlinuz" in server.log()
    # and the console log holds what the machine printed
    console = (tmp_path / "demo" / f"serial-{MAC.parse(mac).hex}.log").read_text(errors="replace")
    assert "iPXE" in console and "/ipxe" in console, console
    assert not qemu_pids(mac), "the demo left its QEMU running"
