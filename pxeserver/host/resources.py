"""What one process may hold open: the file descriptors its connections need.

Every connection an HTTP worker holds is a file descriptor. Many systems start services
with a soft limit of 1,024 (and a hard limit far above it); a worker told to hold more
connections than its limit fails to accept them instead. :func:`open_files_for` raises the
soft limit toward the hard one (which needs no privilege) so the limits pxeserver states
are the limits that hold.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

RESERVE = 256  # descriptors besides connections: files, the store, pipes, sockets


def open_files_for(connections: int) -> int:
    """Raise this process's soft limit of open files to fit ``connections`` connections
    (and :data:`RESERVE`), as far as the hard limit allows; its children inherit it.
    Returns how many connections the limit fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + RESERVE
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if ceiling > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = ceiling
    fits = max(1, soft - RESERVE)
    if fits < connections:
        log.warning("the open-files limit (%d, hard %d) fits %d connections per HTTP worker, "
                    "not limits.http_connections (%d); raise LimitNOFILE= (systemd) or "
                    "ulimit -n", soft, hard, fits, connections)  # fmt: skip
    return min(fits, connections)
