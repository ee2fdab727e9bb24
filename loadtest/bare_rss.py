"""The floor for RSS per idle connection: a bare uvloop server, a trivial Protocol.

    .venv/bin/python -m loadtest.bare_rss 8000

Opens N loopback connections to a server in the same process, sends each a request
line, and prints the server's RSS growth per connection (the client sockets' Python
objects are counted too, so this slightly overstates the floor). Compare with the
"RSS B/conn" column of the benchmark, measured the same way on the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import socket
import sys

import uvloop


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class _Sink(asyncio.Protocol):
    __slots__ = ("_all_in", "_held", "_n", "transport")

    def __init__(self, held: dict[object, _Sink], n: int, all_in: asyncio.Event) -> None:
        self._held = held
        self._n = n
        self._all_in = all_in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._held[transport] = self
        if len(self._held) >= self._n:
            self._all_in.set()

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")  # type: ignore[attr-defined]


async def _main(n: int) -> float:
    loop = asyncio.get_running_loop()
    held: dict[object, _Sink] = {}
    all_in = asyncio.Event()
    server = await loop.create_server(lambda: _Sink(held, n, all_in), "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    before = _rss()
    clients = []
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.bind((f"127.0.0.{2 + i // 15_000}", 0))
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        clients.append(s)
        if i % 500 == 499:
            await asyncio.sleep(0.01)  # let the server accept: a bounded pause, not a sync
    await asyncio.wait_for(all_in.wait(), 60)
    for s in clients:
        s.setblocking(True)
        s.send(b"GET /events?topic=bench HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(1.0)
    gc.collect()
    per_conn = (_rss() - before) / n
    for s in clients:
        s.close()
    server.close()
    return per_conn


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    n = int(args[0]) if args else 8000
    resource.setrlimit(resource.RLIMIT_NOFILE, (20_000, 20_000))
    if 2 * n + 100 > 20_000:
        raise SystemExit("at most 9,900 connections: both ends live in this process")
    print(f"{n} connections: {uvloop.run(_main(n)):,.0f} bytes of RSS per connection")
    return 0


if __name__ == "__main__":
    sys.exit(main())
