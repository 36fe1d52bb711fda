"""What one server owns: the data folder's lock and the port claims, within one process
(each open of the lock file and each claim counts as another server's)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pxeserver.errors import PxeError
from pxeserver.host.claims import LOCK_NAME, DataFolderLock, PortClaim, PortTaken

from ..support.net import free_port


def test_a_data_folder_has_one_owner_until_it_lets_go(tmp_path: Path) -> None:
    first, second = DataFolderLock(tmp_path / "var"), DataFolderLock(tmp_path / "var")
    first.acquire()  # makes the folder
    try:
        assert (tmp_path / "var" / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with pytest.raises(PxeError) as refused:
            second.acquire()
        assert str(refused.value) == (
            f"the data folder {tmp_path / 'var'} is in use by the pxeserver with PID "
            f"{os.getpid()}; stop it (kill {os.getpid()}) or give this one another folder "
            "with --data-dir"
        )
        DataFolderLock(tmp_path / "other").acquire()  # another folder is another owner's
    finally:
        first.release()
    second.acquire()  # released: the next one takes it
    second.release()


def test_a_data_folder_that_cannot_be_made_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where the folder goes")
    with pytest.raises(PxeError, match=r"^cannot use the data folder .*/var: .*--data-dir$"):
        DataFolderLock(tmp_path / "var").acquire()


def test_a_port_claim_names_its_owner_and_is_per_address() -> None:
    port = free_port(socket.SOCK_DGRAM)  # no running server has claimed it, then
    claim = PortClaim("udp", "127.0.0.1", port)
    claim.acquire()
    try:
        with pytest.raises(PortTaken) as taken:
            PortClaim("udp", "127.0.0.1", port).acquire()
        assert (taken.value.port, taken.value.pid) == (port, os.getpid())
        # another protocol, address or port is another claim
        for other in (("tcp", "127.0.0.1", port), ("udp", "127.0.0.2", port),
                      ("udp", "127.0.0.1", free_port(socket.SOCK_DGRAM))):  # fmt: skip
            free = PortClaim(*other)
            free.acquire()
            free.release()
    finally:
        claim.release()
    again = PortClaim("udp", "127.0.0.1", port)
    again.acquire()
    again.release()
    # Port 0: the kernel picks a free port; nothing to claim.
    PortClaim("udp", "127.0.0.1", 0).acquire()
    PortClaim("udp", "127.0.0.1", 0).acquire()
