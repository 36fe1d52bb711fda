"""Network namespaces for the lab: create, run things inside, reach them, delete.

Every name carries the run's random suffix so parallel runs never collide. Processes run
inside a namespace with ``ip netns exec``, which execs the command itself, so the PID we
hold is the process's own and we stop it by that PID. The test process reaches services
inside a namespace through one worker thread that has entered it (``setns`` is
per-thread for network namespaces), so nothing is ever exposed on the host's network.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")
# Who made each namespace (its PID and that process's start time): a run killed before
# its teardown (SIGKILL, a CI timeout) leaves namespaces no fixture can delete; the next
# run that makes one deletes them (sweep_orphans).
OWNERS_DIR = Path("/var/run/pxlab-netns-owners")
IP = shutil.which("ip") or "/usr/sbin/ip"


def missing_support() -> str | None:
    """Why this machine cannot run the lab, or None when it can."""
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing: the lab needs tap devices for its VMs"
    if os.geteuid() != 0:
        return "the lab needs root to create network namespaces (ip netns add)"
    if not os.path.exists("/proc/self/ns/net"):
        return "this kernel has no network namespaces"
    probe = f"pxlprobe{os.getpid()}"
    try:
        subprocess.run([IP, "netns", "add", probe], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return f"cannot create a network namespace here: {exc} {detail.decode().strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True, timeout=10)
    return None


def run(cmd: Sequence[str], timeout: float = 30) -> str:
    """Run a command on the host; raise with its stderr if it fails."""
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, even by SIGKILL,
    so no VM or server outlives a killed test run (it survives the exec of ip netns)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _enter(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Namespace:
    """One network namespace, named ``name``; deleted by :meth:`delete`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.created = False
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None

    def create(self) -> None:
        sweep_orphans()
        OWNERS_DIR.mkdir(parents=True, exist_ok=True)
        (OWNERS_DIR / self.name).write_text(_process_id(os.getpid()) or "")
        run([IP, "netns", "add", self.name])
        self.created = True
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str) -> str:
        return run([IP, "-n", self.name, *args])

    def command(self, cmd: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", self.name, *cmd]

    def popen(self, cmd: Sequence[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
        """Start ``cmd`` inside the namespace in its own session, output to ``log``."""
        with open(log, "ab") as out:
            return subprocess.Popen(
                self.command(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
                **kw,
            )

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 60) -> T:
        """Call ``fn`` in a thread that lives inside the namespace (sockets open there)."""
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"netns-{self.name}",
                initializer=_enter,
                initargs=(NETNS_DIR / self.name,),
            )
        return self._worker.submit(fn, *args).result(timeout=timeout)

    def delete(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None
        if self.created:
            # Virtual devices inside (bridge, taps, veth) go with the namespace once no
            # process holds it; the caller has stopped its processes by then.
            subprocess.run([IP, "netns", "del", self.name], capture_output=True, timeout=30)
            self.created = False
        (OWNERS_DIR / self.name).unlink(missing_ok=True)

    def pids(self) -> list[int]:
        """Processes still inside the namespace (there should be none after teardown)."""
        out = subprocess.run(
            [IP, "netns", "pids", self.name], capture_output=True, text=True, timeout=10
        )
        return [int(p) for p in out.stdout.split()]


def _process_id(pid: int) -> str | None:
    """``pid`` with its start time (a PID alone may be reused), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{pid} {stat.rpartition(')')[2].split()[19]}"


def sweep_orphans() -> list[str]:
    """Delete the namespaces whose maker is no longer running (its teardown never ran),
    with every process still inside them; the names deleted."""
    swept = []
    for owner in sorted(OWNERS_DIR.glob("*")) if OWNERS_DIR.exists() else []:
        made_by = owner.read_text().split()
        if made_by and _process_id(int(made_by[0])) == " ".join(made_by):
            continue  # its run is still going
        leftover = Namespace(owner.name)
        leftover.created = (NETNS_DIR / owner.name).exists()
        if leftover.created:
            for pid in leftover.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            swept.append(owner.name)
        leftover.delete()
    return swept


def stop_process(proc: subprocess.Popen[bytes] | None, *, group: bool = False) -> None:
    """SIGTERM by PID (or process group), then SIGKILL if it does not go within 10 s."""
    if proc is None or proc.poll() is not None:
        return
    send: Callable[[int, int], None] = os.killpg if group else os.kill
    try:
        send(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        send(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        proc.wait(timeout=10)
