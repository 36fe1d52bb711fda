"""``pxeserver demo``: boot one virtual machine against a running pxeserver and follow it.

The machine is QEMU in software emulation (no KVM, no root, no network namespace) on
QEMU's user-mode network: QEMU's built-in DHCP server names
``http://10.0.2.2:PORT/boot.ipxe`` as the boot file, the NIC's iPXE ROM (Debian's
``ipxe-qemu``) chains it, and 10.0.2.2 is the host's loopback as the VM sees it. So it
exercises pxeserver's HTTP side (chain script, iPXE script, kernel, initrd, cloud-config,
phone home) but not ProxyDHCP or TFTP; the lab (tests/lab/) covers those.

What the machine boots is whatever the server's profiles say. The stand-in node image of
the lab (tests/lab/build-node-image.sh: Debian's cloud kernel and a busybox initramfs that
behaves like a CoreOS node towards pxeserver) with tests/lab/demo.yaml boots and reports
``ready`` in well under a minute.

This module talks to the server only through its HTTP API, like any operator.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import PxeError
from ..hints import command
from ..model import MAC
from .nodes import DEFAULT_SERVER, checked_url, unreachable

QEMU = "qemu-system-x86_64"
# QEMU's default option ROM for virtio-net-pci, from Debian's ipxe-qemu.
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")
SLIRP_HOST = "10.0.2.2"  # the host, as a VM on QEMU's user-mode network sees it
CONSOLE_MARK = "PXELAB "  # the lab image's step lines on the serial console


class DemoError(PxeError):
    """The demo cannot run here; the message says what to install or start."""


def guest_url(server: str) -> str:
    """The server's URL as the VM sees it: the host's loopback is 10.0.2.2 there."""
    parts = urlsplit(server.rstrip("/"))
    host = parts.hostname or ""
    if host in ("localhost", "0.0.0.0", "::1") or host.startswith("127."):
        netloc = SLIRP_HOST + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def random_mac() -> MAC:
    """A MAC in QEMU's 52:54:00 range, random enough not to meet an earlier demo's node."""
    return MAC.from_bytes(b"\x52\x54\x00" + secrets.token_bytes(3))


def qemu_command(mac: MAC, bootfile: str, serial_log: Path, memory_mb: int = 384) -> list[str]:
    """A BIOS machine (SeaBIOS) whose virtio NIC's iPXE ROM boots ``bootfile``."""
    return [
        QEMU,
        "-accel", "tcg",  # software emulation: works without /dev/kvm
        # graphics=off: SeaBIOS, and the iPXE ROM through it, print to the serial
        # console too, so the log holds what the machine said before its kernel ran.
        "-machine", "pc,graphics=off",
        "-m", str(memory_mb),
        "-smp", "1",
        "-display", "none",
        "-monitor", "none",
        "-no-reboot",  # a kernel panic ends QEMU instead of looping
        "-netdev", f"user,id=net0,bootfile={bootfile}",
        "-device", f"virtio-net-pci,netdev=net0,mac={mac}",
        "-boot", "n",
        "-serial", f"file:{serial_log}",
    ]  # fmt: skip


def check_tools() -> None:
    if shutil.which(QEMU) is None:
        raise DemoError(
            f"{QEMU} is not installed: apt-get install qemu-system-x86 ipxe-qemu "
            "(or run scripts/setup test)"
        )
    if not IPXE_ROM.exists():
        raise DemoError(f"{IPXE_ROM} is missing: apt-get install ipxe-qemu")


def api_get(server: str, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(server.rstrip("/") + path, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise DemoError(unreachable(server, exc, DEMO_HINT)) from exc


DEMO_SERVER = "http://127.0.0.1:8081"  # tests/lab/demo.yaml's
DEMO_HINT = (
    "for the demo, serve the lab's node image: tests/lab/build-node-image.sh, then "
    f"{command('serve --config tests/lab/demo.yaml')} &, then "
    f"{command('demo --server ' + DEMO_SERVER)}"
)


def wait_for_server(server: str, wait: float, echo: Callable[[str], None]) -> None:
    """Wait up to ``wait`` seconds for ``server`` to answer (it may have just been started
    in the background); DemoError that says how to start one if it never does."""
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            status, _ = api_get(server, "/healthz")
        except DemoError:
            if time.monotonic() >= deadline:
                raise
            if not said:
                echo(f"demo: waiting for the server at {server} (up to {wait:.0f} s)")
                said = True
            time.sleep(0.25)
            continue
        if status not in (200, 503):
            raise DemoError(f"{server}/healthz answered {status}: is that a pxeserver?")
        return


def missing_assets(server: str, mac: MAC) -> tuple[str | None, list[str]]:
    """The profile ``server`` boots ``mac`` with, and the files of it that it lacks (HTTP
    404): a machine without its kernel loops and never reaches ready."""
    status, why = api_get(server, f"/api/v1/nodes/{mac}/explain?platform=pcbios")
    if status != 200 or not why or not why.get("ipxe"):
        return None, []
    urls = []
    for line in why["ipxe"].splitlines():
        words = line.split()
        if words[:1] == ["kernel"] and len(words) > 1:
            urls.append(words[1])
        elif words[:1] == ["initrd"] and len(words) > 1:
            urls.append(words[-1])
    missing = []
    for url in urls:
        if not url.startswith(("http://", "https://")):
            continue  # tftp://: not what this demo's machine fetches
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                missing.append(urlsplit(url).path.removeprefix("/assets/"))
        except OSError:
            continue  # the server's own URL is not reachable from here: cannot tell
    return why.get("profile"), missing


@dataclass
class Follow:
    """What has been reported so far: registry events seen and console lines read."""

    events_seen: int = 0
    console_offset: int = 0
    lines: list[str] = field(default_factory=list)


def new_console_lines(serial_log: Path, follow: Follow) -> list[str]:
    """Complete lines the lab image printed since the last call."""
    try:
        with open(serial_log, "rb") as f:
            f.seek(follow.console_offset)
            chunk = f.read()
    except FileNotFoundError:
        return []
    end = chunk.rfind(b"\n") + 1
    follow.console_offset += end
    text = chunk[:end].decode(errors="replace")
    return [
        ln[ln.index(CONSOLE_MARK) + len(CONSOLE_MARK) :].strip()
        for ln in text.splitlines()
        if CONSOLE_MARK in ln
    ]


def run(
    server: str,
    *,
    mac: MAC | None = None,
    timeout: float = 180.0,
    keep: bool = False,
    log_dir: Path | None = None,
    wait: float = 30.0,
    echo: Callable[[str], None] = print,
) -> int:
    """Boot one VM, print its progress, stop it when it is ready. Returns an exit status.
    ``wait``: how long to wait for the server to answer first."""
    check_tools()
    server = checked_url(server)
    wait_for_server(server, wait, echo)
    mac = mac or random_mac()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="pxeserver-demo-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    serial_log = log_dir / f"serial-{mac.hex}.log"
    bootfile = guest_url(server) + "/boot.ipxe"
    echo(f"demo: machine {mac}: QEMU (BIOS, iPXE ROM, user-mode network) boots {bootfile}")
    echo(f"demo: its serial console goes to {serial_log}")
    qemu_log = open(log_dir / f"qemu-{mac.hex}.log", "wb")  # noqa: SIM115 - the child keeps it
    started = time.monotonic()
    vm = subprocess.Popen(
        qemu_command(mac, bootfile, serial_log),
        stdin=subprocess.DEVNULL,
        stdout=qemu_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C is ours to handle: we stop the VM ourselves
        preexec_fn=_die_with_parent,
    )
    qemu_log.close()
    try:
        return _follow(server, mac, vm, serial_log, started, timeout, echo)
    finally:
        if keep and vm.poll() is None:
            echo(f"demo: the VM keeps running (QEMU PID {vm.pid}); stop it with kill {vm.pid}")
        else:
            _stop(vm)


def _follow(
    server: str,
    mac: MAC,
    vm: subprocess.Popen[bytes],
    serial_log: Path,
    started: float,
    timeout: float,
    echo: Callable[[str], None],
) -> int:
    follow = Follow()
    state = None
    checked = False
    while time.monotonic() - started < timeout:
        elapsed = time.monotonic() - started
        for line in new_console_lines(serial_log, follow):
            echo(f"{elapsed:6.1f} s  console   {line}")
        status, node = api_get(server, f"/api/v1/nodes/{mac}")
        if status == 200 and node:
            for event in node.get("events", [])[follow.events_seen :]:
                what = f"{event['kind']} → {event['state']}  {event['detail']}"
                echo(f"{elapsed:6.1f} s  registry  {what}")
            follow.events_seen = len(node.get("events", []))
            state = node.get("state")
            if not checked and any(e["kind"] == "ipxe" for e in node.get("events", [])):
                checked = True  # the server chose its profile: can the machine boot it?
                profile, missing = missing_assets(server, mac)
                if missing:
                    echo(cannot_boot(server, profile, missing))
                    return 1
            if state == "ready":
                # The machine prints its own "ready" line once its POST has returned.
                _drain_console(serial_log, follow, started, echo)
                nodes = "nodes" + ("" if server == DEFAULT_SERVER else f" --server {server}")
                echo(
                    f"demo: {node['hostname']} ({mac}) is ready {elapsed:.1f} s after power-on; "
                    f"see it with: {command(f'{nodes} show {mac}')}"
                )
                return 0
        if vm.poll() is not None:
            echo(f"demo: QEMU exited with status {vm.returncode}; see {serial_log}")
            _last_words(serial_log, echo)
            return 1
        time.sleep(0.5)
    echo(
        f"demo: not ready after {timeout:.0f} s (last state: {state or 'not seen'}); "
        f"see {serial_log}"
    )
    _last_words(serial_log, echo)
    return 1


def cannot_boot(server: str, profile: str | None, missing: list[str]) -> str:
    what = ", ".join(missing)
    return (
        f"demo: the server at {server} boots this machine with profile {profile}, but it has "
        f"no {what} (404): the machine cannot boot it and would loop; {DEMO_HINT}"
    )


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[c()][0-9A-Za-z]?")


def _last_words(serial_log: Path, echo: Callable[[str], None], count: int = 8) -> None:
    """The last lines the machine printed (firmware, iPXE, kernel), without escapes."""
    try:
        text = serial_log.read_bytes().decode(errors="replace")
    except OSError:
        return
    lines = [ANSI.sub("", line).replace("\b", "").strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if lines:
        echo("demo: the machine's last lines on its console:")
        for line in lines[-count:]:
            echo(f"  {line}")


def _drain_console(
    serial_log: Path, follow: Follow, started: float, echo: Callable[[str], None]
) -> None:
    """Print console lines until the machine's own ready line (at most a few seconds)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = new_console_lines(serial_log, follow)
        for line in lines:
            echo(f"{time.monotonic() - started:6.1f} s  console   {line}")
        if any(line.startswith("step=ready") for line in lines):
            return
        time.sleep(0.2)


def _die_with_parent() -> None:
    """In QEMU's process before exec: it gets SIGKILL if the demo dies without stopping
    it (killed, not interrupted), instead of running on unseen."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _stop(vm: subprocess.Popen[bytes]) -> None:
    if vm.poll() is None:
        os.kill(vm.pid, signal.SIGTERM)
        try:
            vm.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(vm.pid, signal.SIGKILL)
            vm.wait(timeout=10)
