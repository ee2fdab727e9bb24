"""Publisher load generator: raw pipelined HTTP/1.1, in a process of its own.

Sends E events at R events/s (or flat out, a bounded window of requests in flight,
for at most `duration_s`) over C keep-alive connections, one event per request or
NDJSON batches of B events (fanout only). Every event's data is a JSON object that
starts with its publish time, padded to exactly P bytes:
`{"t":1700000000.123456,"p":"xxx..."}`.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import uvloop

_HEAD_END = b"\r\n\r\n"
_FLAT_OUT_WINDOW = 64  # requests in flight per connection when rate = 0


@dataclass(frozen=True)
class PublishSpec:
    kind: str  # "fanout" (control Unix socket) or "nchan" (TCP publisher location)
    address: str  # Unix socket path, or "host:port"
    topic: str
    events: int
    payload_bytes: int
    rate: float  # events/s in all; 0 = flat out
    connections: int = 1
    batch: int = 1  # events per request (NDJSON), fanout only
    broadcast: bool = False  # fanout: POST /broadcast instead of /publish
    duration_s: float = 60.0  # hard bound on the sending time
    # topics > 1: event i goes to topic `<topic><i % topics>` (one subscriber each).
    topics: int = 1
    # Requests in flight per connection when rate = 0: 1 is an app worker that waits
    # for each answer; more is a pipelining client.
    window: int = _FLAT_OUT_WINDOW


def event_data(payload_bytes: int) -> bytes:
    head = b'{"t":%.6f,"p":"' % time.time()
    pad = max(0, payload_bytes - len(head) - 2)
    return head + b"x" * pad + b'"}'


def _topic(spec: PublishSpec, first: int) -> bytes:
    if spec.topics > 1:
        return b"%s%d" % (spec.topic.encode(), first % spec.topics)
    return spec.topic.encode()


def _request(spec: PublishSpec, n: int, first: int = 0) -> bytes:
    if spec.kind == "nchan":
        body = event_data(spec.payload_bytes)
        host = spec.address
        return b"POST /pub?topic=%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            _topic(spec, first),
            host.encode(),
            len(body),
            body,
        )
    if spec.broadcast:
        path, ctype = b"/broadcast", b"application/json"
        body = b'{"event":"m","data":%s}' % event_data(spec.payload_bytes)
    elif n == 1:
        path, ctype = b"/publish", b"application/json"
        body = b'{"topic":"%s","event":"m","data":%s}' % (
            _topic(spec, first),
            event_data(spec.payload_bytes),
        )
    else:
        path, ctype = b"/publish", b"application/x-ndjson"
        line = b'{"topic":"%s","event":"m","data":%%s}\n' % spec.topic.encode()
        body = b"".join(line % event_data(spec.payload_bytes) for _ in range(n))
    return (
        b"POST %s HTTP/1.1\r\nHost: fanout\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (path, ctype, len(body), body)
    )


class _Conn:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, window: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.sent_requests = 0
        self.answered = 0
        self.ok = 0
        self.errors: list[str] = []
        self.window = asyncio.Semaphore(window)
        self.finished = False  # set when nothing more will be sent

    async def read_answers(self) -> None:
        while not (self.finished and self.answered >= self.sent_requests):
            head = await self.reader.readuntil(_HEAD_END)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await self.reader.readexactly(length) if length else b""
            self.answered += 1
            self.window.release()
            if 200 <= status < 300:
                self.ok += 1
            elif len(self.errors) < 5:
                self.errors.append(f"{status}: {body[:200]!r}")


async def _open(spec: PublishSpec) -> _Conn:
    if spec.kind == "nchan":
        host, port = spec.address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
    else:
        reader, writer = await asyncio.open_unix_connection(spec.address)
    return _Conn(reader, writer, spec.window)


def _plan(spec: PublishSpec) -> list[tuple[int, int, int]]:
    """(connection, first event index, events in the request), in sending order."""
    plan = []
    index, request = 0, 0
    while index < spec.events:
        n = min(spec.batch, spec.events - index)
        plan.append((request % spec.connections, index, n))
        index += n
        request += 1
    return plan


async def _run(spec: PublishSpec) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    conns = [await _open(spec) for _ in range(spec.connections)]
    plan = _plan(spec)
    readers = [asyncio.ensure_future(conn.read_answers()) for conn in conns]
    t0 = time.time()
    start = loop.time()
    stop_at = start + spec.duration_s
    sent_events = 0
    if spec.rate > 0:
        for c, first, n in plan:
            now = loop.time()
            if now > stop_at:
                break
            conn = conns[c]
            due = start + first / spec.rate
            if due > now:
                await asyncio.sleep(due - now)
            conn.writer.write(_request(spec, n, first))
            conn.sent_requests += 1
            sent_events += n
    else:
        # Flat out: each connection sends its share as fast as its window allows,
        # on its own (as app workers do), so a slow answer holds only its connection.
        async def send(conn: _Conn, share: list[tuple[int, int, int]]) -> int:
            sent = 0
            for _, first, n in share:
                if loop.time() > stop_at:
                    break
                await conn.window.acquire()
                conn.writer.write(_request(spec, n, first))
                conn.sent_requests += 1
                sent += n
            return sent

        shares = [[p for p in plan if p[0] == c] for c in range(spec.connections)]
        counts = await asyncio.gather(*(send(c, sh) for c, sh in zip(conns, shares, strict=True)))
        sent_events = sum(counts)
    t_last = time.time()
    for conn in conns:
        await conn.writer.drain()
    for conn, reader in zip(conns, readers, strict=True):
        conn.finished = True
        if conn.answered >= conn.sent_requests:
            reader.cancel()  # idle: waiting for an answer that will never come
    await asyncio.wait(readers, timeout=30)
    for reader in readers:
        reader.cancel()
    for conn in conns:
        conn.writer.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "sent_events": sent_events,
        "requests": sum(c.sent_requests for c in conns),
        "ok": sum(c.ok for c in conns),
        "errors": [e for c in conns for e in c.errors],
        "t_first": t0,
        "t_last": t_last,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def publisher_main(pipe: Connection, spec: PublishSpec) -> None:
    """Entry point of the publisher process: waits for "go", publishes, reports."""
    try:
        if pipe.recv() != "go":
            return
        result = uvloop.run(_run(spec))
        pipe.send(("done", result))
    except Exception as exc:
        pipe.send(("error", repr(exc)))
    finally:
        pipe.close()
