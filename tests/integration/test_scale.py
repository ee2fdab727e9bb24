"""5,000 concurrent subscribers all receive a broadcast."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.integration

N = 5000
MARK = b'data: "to-everyone"'
REQUEST = b"GET /events?topic=t HTTP/1.1\r\nHost: x\r\n\r\n"


class Waiter(asyncio.Protocol):
    def __init__(self, connected: asyncio.Event, got: list[int], all_got: asyncio.Event) -> None:
        self.buf = b""
        self.got = got
        self.all_got = all_got
        self.connected_seen = False
        self.connected = connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(REQUEST)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.connected_seen and b"event: connected" in self.buf:
            self.connected_seen = True
            self.connected.set()
        if MARK in self.buf:
            self.got.append(1)
            self.buf = b""
            if len(self.got) == N:
                self.all_got.set()


async def test_5000_subscribers_receive_a_broadcast(daemon):
    loop = asyncio.get_running_loop()
    got: list[int] = []
    all_got = asyncio.Event()
    protos = []
    for _ in range(N):
        _, proto = await loop.create_connection(
            lambda: Waiter(asyncio.Event(), got, all_got), daemon.host, daemon.port
        )
        protos.append(proto)
    async with asyncio.timeout(60):
        for p in protos:
            await p.connected.wait()
    assert daemon.stats()["connections"] == N
    result = daemon.publisher.broadcast("to-everyone")
    assert (result["sent"], result["total"]) == (N, N)
    async with asyncio.timeout(60):
        await all_got.wait()
    assert len(got) == N
    for p in protos:
        p.transport.close()
