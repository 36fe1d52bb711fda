"""A UDP relay that delays every packet by a fixed time each way (``tc netem`` is not here).

    relay = DelayRelay(("127.0.0.1", server_port), delay_s=0.001).start()
    ... a TFTP client talks to 127.0.0.1:relay.port ...
    relay.stop()

Made for TFTP, where the server answers from a new port (its transfer ID): each client
gets two sockets of the relay, one facing the server (``up``) and one facing the client
(``down``, the client's view of the server's transfer port). The client's first packet
(the read request) arrives on the relay's listening port and goes to the server's; what
the server sends to ``up`` goes to the client from ``down``; what the client sends to
``down`` goes to whichever server port last wrote to ``up``.

One thread receives (epoll), one sends from a time-ordered queue, so every packet leaves
``delay_s`` after it arrived, in order. The precision is that of a Python thread waking
from a timed wait: tens of microseconds on an idle machine, more on a busy one; the relay
also adds its own processing time (measure with ``delay_s=0`` to see it).
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class _Session:
    client: tuple[str, int]
    up: socket.socket
    down: socket.socket
    server: tuple[str, int] | None = None
    last: float = field(default_factory=time.monotonic)


class DelayRelay:
    def __init__(self, target: tuple[str, int], delay_s: float, host: str = "127.0.0.1") -> None:
        self.target = target
        self.delay = delay_s
        self.listen = self._socket(host)
        self.port = int(self.listen.getsockname()[1])
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.listen, selectors.EVENT_READ, None)
        self._by_client: dict[tuple[str, int], _Session] = {}
        self._queue: list[tuple[float, int, socket.socket, bytes, tuple[str, int]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._running = False
        self._threads: list[threading.Thread] = []
        self.forwarded = 0

    @staticmethod
    def _socket(host: str) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.bind((host, 0))
        return s

    def start(self) -> DelayRelay:
        self._running = True
        self._threads = [
            threading.Thread(target=self._receive, name="relay-recv", daemon=True),
            threading.Thread(target=self._send, name="relay-send", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._running = False
        with self._cond:
            self._cond.notify()
        for t in self._threads:
            t.join(timeout=5)
        for s in self._by_client.values():
            s.up.close()
            s.down.close()
        self._sel.close()
        self.listen.close()

    def _later(self, sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
        item = (time.monotonic() + self.delay, next(self._seq), sock, data, addr)
        with self._cond:
            heapq.heappush(self._queue, item)
            if self._queue[0] is item:
                self._cond.notify()

    def _receive(self) -> None:
        while self._running:
            for key, _ in self._sel.select(timeout=0.2):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data, addr = sock.recvfrom(65536)
                except OSError:
                    continue
                session: _Session | None = key.data
                if session is None:  # a client's first packet, or its retransmission
                    session = self._by_client.get(addr)
                    if session is None:
                        session = _Session(
                            addr, self._socket("127.0.0.1"), self._socket("127.0.0.1")
                        )
                        self._by_client[addr] = session
                        self._sel.register(session.up, selectors.EVENT_READ, session)
                        self._sel.register(session.down, selectors.EVENT_READ, session)
                    self._later(session.up, data, self.target)
                elif sock is session.up:  # from the server
                    session.server = addr
                    self._later(session.down, data, session.client)
                elif session.server is not None:  # from the client, to the transfer port
                    self._later(session.up, data, session.server)

    def _send(self) -> None:
        while True:
            with self._cond:
                while self._running and not self._queue:
                    self._cond.wait()
                if not self._running:
                    return
                wait = self._queue[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, sock, data, addr = heapq.heappop(self._queue)
            try:
                sock.sendto(data, addr)
                self.forwarded += 1
            except OSError:
                pass  # a closed session or a full buffer: UDP, the client retransmits
