"""Child processes that end with the main process, even when it is killed with SIGKILL.

``pxeserver serve`` runs its HTTP workers as child processes. If the main process is
killed outright (``kill -9``, the OOM killer), nothing tells them: they used to live on as
orphans, still holding the HTTP port, so that a restarted server could not bind it (and
multiprocessing's resource tracker, whose pipe they hold, lived on with them). Each
worker asks the kernel (Linux ``prctl(PR_SET_PDEATHSIG)``) for SIGKILL when its parent
goes, and checks right after asking that its parent is still the one that started it:
a parent that died before the request was made sends nothing.

The kernel's "parent" is the *thread* that created the child: call this only in
children started from a thread that lives as long as the process (granian starts its
workers from the main thread). TFTP transfer processes, which are respawned from reader
threads that end, do not use it: they end when their job pipe from the main process
closes, which a dead main process closes too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when ``parent`` (its creator) ends.

    Exits at once if ``parent`` is gone already. Returns False where the kernel cannot
    do it (not Linux, or prctl refused); the child then lives on as before.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(err))
        return False
    if os.getppid() != parent:
        # The parent died before the request: nobody will send the signal. Go now.
        print(
            f"pxeserver: worker {os.getpid()}: the main process {parent} is gone; exiting",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)
    return True
