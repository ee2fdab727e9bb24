"""Subscriber load generator: one process holds a share of the N SSE connections.

Each process runs uvloop with plain asyncio Protocols (no parser per connection):
a connection counts the benchmark's events by the marker every event's data starts
with, and a few sampled connections also parse the publish timestamp carried in the
event to measure publish-to-receive latency. The parent drives the process over a
Pipe: it connects on start, then answers "counts", "latency" and "stop"; it exits by
itself when its lifetime runs out, whatever the parent does.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection

import uvloop

# Every benchmark event's data is a JSON object whose first key is the publish time:
# `data: {"t":1700000000.123456,"p":"xxx..."}`. Comments, `retry:`, the `connected`
# event and nchan's greeting never match it.
MARKER = b'data: {"t":'
_TAIL = len(MARKER) - 1
# Connects in flight per process. Bursts of hundreds of SYNs and heads overflow the
# kernel's per-CPU backlog (net.core.netdev_max_backlog, 1000 here; see the "net drops"
# column), and a dropped SYN costs a 1 s, 3 s, 7 s retransmit.
_CONCURRENT_CONNECTS = 64
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    host: str
    port: int
    path: str  # e.g. /events?topic=bench
    count: int
    source: str | None  # local address to bind (spreads ephemeral ports)
    sample_every: int  # every k-th connection records latency; 0 = none
    lifetime_s: float
    http10: bool = False
    # With topics > 1, connection g (counted over all processes, from `first`)
    # subscribes to topic `<path's topic><g % topics>`: one topic per subscriber.
    topics: int = 1
    first: int = 0


class Counter(asyncio.Protocol):
    """Counts events; never parses them."""

    __slots__ = ("closed", "head_done", "received", "tail", "transport")

    def __init__(self) -> None:
        self.received = 0
        self.tail = b""
        self.closed = False
        self.head_done: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        head = self.head_done
        if head is not None and not head.done() and b"\r\n\r\n" in data:
            head.set_result(None)
        n = data.count(MARKER)
        tail = self.tail
        if tail:
            # Only a marker split across the two reads can be found here.
            n += (tail + data[:_TAIL]).count(MARKER)
        self.tail = data[-_TAIL:]
        self.received += n

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        head = self.head_done
        if head is not None and not head.done():
            head.set_exception(ConnectionError("closed before the response head"))


class Sampler(Counter):
    """Also parses each event's publish time: latency = now - t, in ms."""

    __slots__ = ("buf", "latencies")

    def __init__(self, latencies: array[float]) -> None:
        super().__init__()
        self.buf = b""
        self.latencies = latencies

    def data_received(self, data: bytes) -> None:
        now = time.time()
        super().data_received(data)
        buf = self.buf + data
        start = 0
        while True:
            i = buf.find(MARKER, start)
            if i < 0:
                break
            j = buf.find(b",", i + len(MARKER))
            if j < 0:
                break
            self.latencies.append((now - float(buf[i + len(MARKER) : j])) * 1000.0)
            start = j
        keep = max(start, len(buf) - 64)
        self.buf = buf[keep:]


async def _connect_one(
    loop: asyncio.AbstractEventLoop, spec: WorkerSpec, proto: Counter, request: bytes
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if spec.source:
            # The port is chosen at connect() from the whole 4-tuple, not at bind():
            # cheaper, and never short of ports while the destinations differ.
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((spec.source, 0))
        sock.setblocking(False)
        await loop.sock_connect(sock, (spec.host, spec.port))
    except BaseException:
        sock.close()
        raise
    proto.head_done = loop.create_future()
    transport, _ = await loop.create_connection(lambda: proto, sock=sock)
    transport.write(request)
    await proto.head_done


async def _connect_all(
    spec: WorkerSpec, latencies: array[float]
) -> tuple[list[Counter], int, float]:
    loop = asyncio.get_running_loop()
    version = b"1.0" if spec.http10 else b"1.1"

    def request(i: int) -> bytes:
        path = spec.path
        if spec.topics > 1:
            path += str((spec.first + i) % spec.topics)
        return b"GET %s HTTP/%s\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n\r\n" % (
            path.encode(),
            version,
            spec.host.encode(),
            spec.port,
        )

    protos: list[Counter] = []
    for i in range(spec.count):
        sampled = spec.sample_every and i % spec.sample_every == 0
        protos.append(Sampler(latencies) if sampled else Counter())
    gate = asyncio.Semaphore(_CONCURRENT_CONNECTS)
    failures = 0

    async def one(i: int, proto: Counter) -> None:
        nonlocal failures
        async with gate:
            try:
                await asyncio.wait_for(_connect_one(loop, spec, proto, request(i)), 30)
            except (TimeoutError, OSError, ConnectionError):
                failures += 1
                proto.closed = True

    started = time.monotonic()
    await asyncio.gather(*(one(i, p) for i, p in enumerate(protos)))
    return protos, failures, time.monotonic() - started


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _serve(pipe: Connection, spec: WorkerSpec) -> None:
    loop = asyncio.get_running_loop()
    latencies: array[float] = array("d")
    protos, failures, elapsed = await _connect_all(spec, latencies)
    pipe.send(("connected", spec.count - failures, failures, elapsed))
    commands: asyncio.Queue[object] = asyncio.Queue()
    loop.add_reader(pipe.fileno(), lambda: commands.put_nowait(pipe.recv()))
    # The loop made the pipe non-blocking; a large answer (latencies) must not fail
    # with EAGAIN half-sent. Commands are read only when readable, so this never stalls.
    os.set_blocking(pipe.fileno(), True)
    deadline = loop.time() + spec.lifetime_s
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            command = await asyncio.wait_for(commands.get(), remaining)
        except TimeoutError:
            break
        if command == "counts":
            received = sum(p.received for p in protos)
            closed = sum(1 for p in protos if p.closed)
            pipe.send(("counts", received, closed, _cpu_s()))
        elif command == "latency":
            pipe.send(("latency", latencies.tobytes()))
            del latencies[:]
        elif command == "stop":
            break
    loop.remove_reader(pipe.fileno())
    for p in protos:
        if p.transport is not None:
            p.transport.abort()
    pipe.send(("stopped",))


def worker_main(pipe: Connection, spec: WorkerSpec) -> None:
    """Entry point of one subscriber process (multiprocessing target)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = spec.count + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    try:
        uvloop.run(_serve(pipe, spec))
    except Exception as exc:  # reported to the parent rather than lost in a child
        pipe.send(("error", f"worker {spec.index} (pid {os.getpid()}): {exc!r}"))
    finally:
        pipe.close()
