"""UDP receive buffers: a rack's burst of DISCOVERs and read requests must fit."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pxeserver.host.netif import UDP_RECEIVE_BUFFER, enlarge_receive_buffer


def rmem_max() -> int:
    return int(Path("/proc/sys/net/core/rmem_max").read_text())


def test_the_buffer_is_as_large_as_allowed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        default = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        granted = enlarge_receive_buffer(s)
        assert granted == s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        # root (or CAP_NET_ADMIN) gets what it asks; anyone else up to net.core.rmem_max
        expected = UDP_RECEIVE_BUFFER if os.geteuid() == 0 else min(UDP_RECEIVE_BUFFER,
                                                                    rmem_max())  # fmt: skip
        assert granted >= expected and granted >= default


def test_a_burst_of_datagrams_waits_in_it() -> None:
    # 1,000 DISCOVER-sized datagrams sent before anyone reads: all of them are kept
    # (with the default 208 KiB buffer about 150 would be).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
         socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:  # fmt: skip
        if enlarge_receive_buffer(rx) < UDP_RECEIVE_BUFFER:
            return  # not root and a small rmem_max: nothing this test can show
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0)
        for i in range(1000):
            tx.sendto(i.to_bytes(4, "big") + bytes(300), rx.getsockname())
        got = 0
        while True:
            try:
                rx.recv(2048)
            except BlockingIOError:
                break
            got += 1
        assert got == 1000
