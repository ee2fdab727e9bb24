"""A small SSE client for tests: raw HTTP over asyncio streams, chunked or HTTP/1.0."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson


@dataclass
class Event:
    event: str
    data: str
    id: str | None

    def json(self) -> object:
        return orjson.loads(self.data)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class SSEClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    headers: dict[str, str]
    chunked: bool
    retry: int | None = None
    last_id: str | None = None
    _text: bytes = b""
    _events: list[Event] = field(default_factory=list)
    comments: int = 0
    ended: bool = False

    async def next(self, timeout: float = 5.0) -> Event:
        """The next event (comments and retry fields are recorded, not returned)."""
        async with asyncio.timeout(timeout):
            while not self._events:
                if self.ended:
                    raise EOFError("stream ended")
                await self._read()
        return self._events.pop(0)

    async def events(self, n: int, timeout: float = 5.0) -> list[Event]:
        async with asyncio.timeout(timeout):
            return [await self.next(timeout) for _ in range(n)]

    async def until_closed(self, timeout: float = 5.0) -> list[Event]:
        """Read to the end of the stream; returns the events that came before it."""
        async with asyncio.timeout(timeout):
            while not self.ended:
                await self._read()
        out, self._events = self._events, []
        return out

    async def wait_comment(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.comments < count:
                if self.ended:
                    raise EOFError("stream ended")
                await self._read()

    async def _read(self) -> None:
        await self._read_once()
        if self.ended:
            self.writer.close()

    async def _read_once(self) -> None:
        if self.chunked:
            line = await self.reader.readline()
            if not line:
                self.ended = True
                return
            size = int(line.strip(), 16)
            if size == 0:
                await self.reader.readexactly(2)
                self.ended = True
                return
            data = await self.reader.readexactly(size + 2)
            self._feed(data[:-2])
        else:
            data = await self.reader.read(65536)
            if not data:
                self.ended = True
                return
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        self._text += data
        while b"\n\n" in self._text:
            block, self._text = self._text.split(b"\n\n", 1)
            self._block(block.decode())

    def _block(self, block: str) -> None:
        event, data, id_ = "message", [], None
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                id_ = value
            elif name == "retry":
                self.retry = int(value)
        if id_ is not None:
            self.last_id = id_
        if data:
            self._events.append(Event(event, "\n".join(data), id_))

    def close(self) -> None:
        self.writer.close()

    async def aclose(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    def abort(self) -> None:
        self.writer.transport.abort()


async def request(
    host: str,
    port: int,
    target: str,
    headers: dict[str, str] | None = None,
    http10: bool = False,
    method: str = "GET",
    local_addr: tuple[str, int] | None = None,
) -> SSEClient | Response:
    """Open a subscription; a non-200 answer comes back as a Response."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=local_addr, limit=1 << 20)
    version = "HTTP/1.0" if http10 else "HTTP/1.1"
    lines = [f"{method} {target} {version}", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    hdrs = {}
    for line in header_lines:
        if line:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
    if status != 200:
        body = await reader.read()
        writer.close()
        return Response(status, hdrs, body)
    chunked = hdrs.get("transfer-encoding") == "chunked"
    return SSEClient(reader, writer, status, hdrs, chunked)


async def subscribe(host: str, port: int, target: str, **kw: object) -> SSEClient:
    result = await request(host, port, target, **kw)  # type: ignore[arg-type]
    assert isinstance(result, SSEClient), f"expected a stream, got {result}"
    return result
