"""Running without root: what the dropped user must be able to do, and capabilities.

``pxeserver serve --user USER`` binds its ports as root, then becomes USER
(:func:`drop_privileges`): uid, gid, no supplementary groups, no
capabilities, and no_new_privs, so that no program it starts can gain privileges again.

One exception, taken deliberately and only when needed: with an HTTP port below 1024
(80), the server keeps CAP_NET_BIND_SERVICE and nothing else. granian's HTTP workers on
Linux each bind the HTTP port themselves (SO_REUSEPORT), after they start, so after the
drop, and respawned workers bind it again; without that capability they die with
"Permission denied". The capability lets a process bind ports below 1024 and nothing
more; with the default HTTP port 8080 every process runs with no capability at all.

Before anything is bound, :func:`check_user_can_serve` runs a probe as USER: the
interpreter, pxeserver and its packages, the settings file and folders to read, the way
to the data dir. A server that would fail after the drop (an interpreter under a folder
closed to USER, such as pyenv's under /root) stops at once with a sentence that says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pwd
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import PxeError

log = logging.getLogger(__name__)

# <linux/prctl.h>, <linux/capability.h>
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
CAP_NET_BIND_SERVICE = 10
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _prctl(option: int, arg2: int, arg3: int = 0) -> None:
    if _libc().prctl(option, arg2, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise PxeError(f"prctl({option}) failed: {os.strerror(err)}")


def keep_caps(on: bool) -> None:
    """Keep the permitted capabilities across the coming setuid (then trimmed)."""
    _prctl(PR_SET_KEEPCAPS, 1 if on else 0)


def keep_only_bind() -> None:
    """After setuid: CAP_NET_BIND_SERVICE alone, effective, and ambient so that the
    processes started later (HTTP workers, from an interpreter with no file
    capabilities) have it too."""
    bit = 1 << CAP_NET_BIND_SERVICE
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)(_CapData(bit, bit, bit), _CapData(0, 0, 0))
    if _libc().capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise PxeError(f"cannot keep CAP_NET_BIND_SERVICE: capset: {os.strerror(err)}")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE)
    keep_caps(False)


def no_new_privs() -> None:
    """No program this process or its children start gains privileges (set-user-ID,
    file capabilities): a process that is not root cannot become root again."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


# Run as the dropped user before anything is bound: what it must be able to do once root
# is gone. The HTTP workers and TFTP processes start as that user from this interpreter
# and read the settings file and the folders; the data dir must be reachable to be
# handed over (drop_privileges chowns it).
_USER_PROBE = """
import os, sys
import flask, granian, jinja2, yaml, pxeserver.web, pxeserver.tftp.server, pxeserver.dhcp.proxy
readable, data_dir = sys.argv[1:-1], os.path.abspath(sys.argv[-1])
bad = []
for path in readable:
    try:
        is_dir = os.path.isdir(path) if os.stat(path) else False
    except FileNotFoundError:
        continue  # a missing folder is pxeserver check's business, not a privilege problem
    except OSError:
        is_dir = False
    if not os.access(path, os.R_OK | (os.X_OK if is_dir else 0)):
        bad.append(f"it cannot read {path}")
folder = "/"
for part in os.path.dirname(data_dir).split("/")[1:]:
    folder = os.path.join(folder, part)
    if not os.access(folder, os.X_OK):  # missing (root makes it) or closed to the user
        if os.path.exists(folder):
            bad.append(f"it cannot reach the data dir {data_dir}: {folder} is closed to it")
        break
print("; ".join(bad))
sys.exit(1 if bad else 0)
"""


def check_user_can_serve(user: str, readable: Sequence[Path], data_dir: Path) -> None:
    """Fail before binding anything if ``--user`` names no user that can be switched to,
    or one that could not run the server once root is dropped: the interpreter and
    pxeserver's packages, the settings file and the folders to read, and the way to the
    data dir (that probe only as root: only root can switch users)."""
    entry = _user(user)
    if os.getuid() not in (0, entry.pw_uid):
        raise PxeError(f"--user {user}: only root can change user; start as root or drop --user")
    if os.getuid() != 0:
        return
    # Absolute: the probe runs in /, the server in the current folder.
    paths = [os.path.abspath(p) for p in (*readable, data_dir)]
    cmd = [sys.executable, "-c", _USER_PROBE, *paths]
    try:
        out = subprocess.run(
            cmd,
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd="/",
        )
    except PermissionError as exc:
        raise PxeError(
            f"--user {user}: that user cannot run this Python ({sys.executable} → "
            f"{os.path.realpath(sys.executable)}: {exc.strerror}); install pxeserver where "
            "it can read it (e.g. a virtualenv under /opt made from /usr/bin/python3) or "
            "choose another user"
        ) from exc
    if out.returncode == 0:
        return
    said = out.stdout.strip()
    if not said:  # the imports failed: a folder on the way to the packages is closed to it
        last = (out.stderr.strip().splitlines() or ["it exited with " + str(out.returncode)])[-1]
        said = f"it cannot load pxeserver with {sys.executable} ({last})"
    raise PxeError(
        f"--user {user}: after dropping root {said}; make these readable by {user} (or "
        "reachable, for the data dir), or choose another user"
    )


def _user(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError as exc:
        raise PxeError(f"no user {user!r} to drop privileges to; create it or fix --user") from exc


def drop_privileges(user: str, writable: list[Path], *, keep_bind: bool = False) -> None:
    """Become ``user`` (its uid, gid and no supplementary groups), after handing it the
    folders it must write (the embedded store). Every thread of the process changes with
    the call (glibc applies setuid to all threads). No capability is kept, unless
    ``keep_bind``: then CAP_NET_BIND_SERVICE alone, also for the processes started later
    (see :func:`keep_only_bind`). Either way no later program can
    gain privileges (no_new_privs: a set-user-ID program runs as the caller)."""
    entry = _user(user)
    if os.getuid() != 0:
        if os.getuid() == entry.pw_uid:
            return
        raise PxeError(f"--user {user}: only root can change user; start as root or drop --user")
    for folder in writable:  # the embedded store and the metrics files under it
        for top, dirs, files in os.walk(folder):
            for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
                os.chown(name, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    keep_bind = keep_bind and entry.pw_uid != 0  # "--user root" stays root: nothing to keep
    if keep_bind:
        keep_caps(True)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if keep_bind:
        keep_only_bind()
    no_new_privs()
    kept = ", keeping only CAP_NET_BIND_SERVICE" if keep_bind else ", no capabilities"
    log.info(
        "dropped privileges: now user %s (uid %d, gid %d)%s",
        user,
        entry.pw_uid,
        entry.pw_gid,
        kept,
    )
