"""UDP receive buffers: a rack's burst of DISCOVERs and read requests must fit."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

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


def burst(rx: socket.socket) -> int:
    """Send 1,000 DISCOVER-sized datagrams to ``rx`` before reading any; how many it kept."""
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for i in range(1000):
            tx.sendto(i.to_bytes(4, "big") + bytes(300), rx.getsockname())
    got = 0
    while True:
        try:
            rx.recv(2048)
        except BlockingIOError:
            return got
        got += 1


def test_a_burst_of_datagrams_waits_in_it() -> None:
    # 1,000 DISCOVER-sized datagrams sent before anyone reads: all of them are kept.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        granted = enlarge_receive_buffer(rx)
        if granted < UDP_RECEIVE_BUFFER:
            pytest.skip(
                f"the kernel granted a {granted}-byte receive buffer of {UDP_RECEIVE_BUFFER}: "
                f"not root, and net.core.rmem_max is {rmem_max()}; run as root (as CI does) "
                f"or raise net.core.rmem_max to see the burst fit"
            )
        assert burst(rx) == 1000
    # positive control: the same burst overflows a small buffer (the kernel doubles 64 KiB)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as small:
        small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        assert burst(small) < 1000
