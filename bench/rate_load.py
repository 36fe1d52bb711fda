"""An open-loop HTTP load generator at a fixed request rate (wrk2 is not in Debian).

Request ``i`` is due at ``start + i / rate`` whatever happened to the ones before it, and
its latency is counted from that moment, not from when a connection was free to send it:
a server that falls behind sees its queueing in the figures (no coordinated omission,
which closed-loop tools such as plain wrk have). Requests go over a pool of HTTP/1.1
keep-alive connections to 127.0.0.1; a request that finds every connection busy waits for
one, and that wait is part of its latency.

With ``then`` (a pattern whose first group is a path), a request's answer names a second
request, sent on the same connection as soon as the first is answered (an iPXE script and
the config URL it names: a boot); the latency is then the pair's, from the first's due
time to the end of the second.

It is Python (asyncio), so it costs CPU on the machine it measures: about a fifth of a
core at 2,000 requests/s here. ``lag_ms`` in the result says how late the generator
itself was sending its last requests; a large figure means the generator, not the
server, could not keep up.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass


@dataclass
class RateResult:
    sent: int
    ok: int
    errors: int
    latencies_s: list[float]
    achieved_rate: float
    lag_ms: float


async def _get(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], port: int, path: str, timeout: float
) -> tuple[int, bytes]:
    """One GET on a keep-alive connection: (status, body)."""
    reader, writer = conn
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    return status, body


async def _request(
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None],
    port: int,
    path: str,
    timeout: float,
    then: re.Pattern[bytes] | None = None,
) -> bool:
    conn = await pool.get()
    try:
        if conn is None:
            conn = await asyncio.open_connection("127.0.0.1", port)
        status, body = await _get(conn, port, path, timeout)
        if then is not None and 200 <= status < 300:
            found = then.search(body)
            if found is None:
                status = 0  # the answer names no second request: not what was asked
            else:
                status, body = await _get(conn, port, found.group(1).decode(), timeout)
        pool.put_nowait(conn)
        return 200 <= status < 300
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, IndexError):
        if conn is not None:
            conn[1].close()
        pool.put_nowait(None)  # dial a fresh connection next time
        return False


async def _run(
    port: int,
    paths: list[str],
    rate: float,
    duration: float,
    conns: int,
    timeout: float,
    then: re.Pattern[bytes] | None,
) -> RateResult:
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]
    pool = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    total = int(rate * duration)
    latencies: list[float] = []
    outcomes: list[bool] = []
    tasks = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    lag = 0.0

    hard_end = start + duration + timeout

    async def one(i: int, due: float) -> None:
        # Bounded: whatever has not been answered by the end of the run plus the
        # timeout is an error (a server far behind would otherwise keep it going).
        try:
            ok = await asyncio.wait_for(
                _request(pool, port, paths[i % len(paths)], timeout, then),
                max(0.01, hard_end - loop.time()),
            )
        except asyncio.TimeoutError:
            ok = False
        outcomes.append(ok)
        if ok:
            latencies.append(loop.time() - due)

    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = -delay
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    wall = loop.time() - start
    while not pool.empty():
        conn = pool.get_nowait()
        if conn is not None:
            conn[1].close()
    ok = sum(outcomes)
    return RateResult(total, ok, total - ok, latencies, ok / wall, lag * 1000)


def run_at_rate(
    port: int,
    paths: list[str],
    rate: float,
    duration: float,
    conns: int = 32,
    timeout: float = 10.0,
    then: re.Pattern[bytes] | None = None,
) -> RateResult:
    """GET ``paths`` in turn at ``rate`` per second for ``duration`` seconds (each followed
    by the path ``then`` finds in its answer, if given)."""
    return asyncio.run(_run(port, paths, rate, duration, conns, timeout, then))
