"""A reader that stops reading is cut; 200 others keep receiving every event."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from fanout.client import AsyncPublisher

pytestmark = pytest.mark.integration

OTHERS = 200
PAYLOAD = "x" * 16_000
ID = re.compile(rb"\nid: [0-9a-f]+-(\d+)\n")
REQUEST = b"GET /events?topic=a HTTP/1.1\r\nHost: x\r\n\r\n"


class Counter(asyncio.Protocol):
    """A subscriber that records the seq of every event id, across read boundaries."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.tail = b""
        self.want = -1
        self.done = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(REQUEST)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data
        last = 0
        for m in ID.finditer(buf):
            self.seqs.append(int(m.group(1)))
            last = m.end()
        self.tail = buf[max(last, len(buf) - 64) :]
        if self.seqs and self.seqs[-1] == self.want:
            self.done.set()


async def test_stalled_reader_is_cut_and_others_get_everything(start_daemon):
    daemon = start_daemon(
        {"limits": {"max_buffered_bytes": 65536, "socket_send_buffer_bytes": 65536}}
    )
    loop = asyncio.get_running_loop()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((daemon.host, daemon.port))
    stalled.sendall(REQUEST)  # and never read again
    others = []
    for _ in range(OTHERS):
        _, proto = await loop.create_connection(Counter, daemon.host, daemon.port)
        others.append(proto)
    daemon.wait_connections(OTHERS + 1)
    ids = []
    async with AsyncPublisher(daemon.control) as pub:
        for n in range(400):  # bounded: ~6 MB, far more than the stalled socket holds
            ids.append((await pub.publish("a", PAYLOAD))["id"])
            if n % 10 == 9 and (await pub.stats())["dropped_slow"]:
                break
        stats = await pub.stats()
    assert stats["dropped_slow"] == 1, "the stalled reader was never cut"
    assert stats["connections"] == OTHERS
    expected = [int(i.rsplit("-", 1)[1]) for i in ids]
    for p in others:
        p.want = expected[-1]
        if p.seqs and p.seqs[-1] == p.want:
            p.done.set()
    async with asyncio.timeout(60):
        for p in others:
            await p.done.wait()
    for p in others:
        assert p.seqs == [0, *expected]  # 0: the `connected` event's position
        p.transport.close()
    # The stalled socket was closed by the daemon: draining it ends in EOF or a reset.
    stalled.settimeout(10)
    with pytest.raises(ConnectionResetError):
        _drain(stalled)
    stalled.close()


def _drain(sock: socket.socket) -> None:
    while sock.recv(1 << 20):
        pass
    raise ConnectionResetError("clean EOF")
