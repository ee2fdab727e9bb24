"""Publisher clients for apps: sync (Django, Celery, scripts) and asyncio (FastAPI).

Each keeps one keep-alive connection to the control socket and reconnects when the
daemon has closed it (a restart, say). A request that fails after it was sent is
not retried: it may have been published, and publishing twice is worse than an
error the caller sees.

Both speak the control socket's HTTP/1.1 directly: a request is one bytes object
built by one formatting and sent with one system call, and answers are read by a
small sans-IO reader (`Answers`) that knows what fanout sends (a status line, a
Content-Length, a JSON body). `AsyncPublisher` pipelines: concurrent calls share the
connection, each request written as soon as it is made, answers matched in order.
`publish_many` sends a batch as one NDJSON request (one round trip, all or none).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any, cast
from urllib.parse import quote

import orjson

from .names import is_topic

DEFAULT_SOCKET = "./run/fanout.sock"
_UNSET: Any = object()
_JSON = b"application/json"
_NDJSON = b"application/x-ndjson"
_READ_SIZE = 65536


class PublishError(Exception):
    """The daemon refused a request (status >= 400) or could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


def _event_body(data: Any, event: str, text: str | None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"event": event}
    for key, value in extra.items():
        if value is not None:
            body[key] = value
    if text is not None:
        body["text"] = text
    else:
        body["data"] = None if data is _UNSET else data
    return orjson.dumps(body)


def _ndjson(events: Iterable[Mapping[str, Any]]) -> bytes:
    option = orjson.OPT_APPEND_NEWLINE
    return b"".join(
        [orjson.dumps(e if type(e) is dict else dict(e), option=option) for e in events]
    )


def request(method: bytes, path: bytes, body: bytes = b"", ctype: bytes = _JSON) -> bytes:
    """One request as it goes on the wire."""
    if not body:
        return b"%s %s HTTP/1.1\r\nHost: fanout\r\n\r\n" % (method, path)
    return b"%s %s HTTP/1.1\r\nHost: fanout\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        method,
        path,
        ctype,
        len(body),
        body,
    )


def _result(status: int, payload: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        value = {"error": payload.decode("utf-8", "replace")}
    if status >= 400:
        message = value.get("error", value) if isinstance(value, dict) else value
        raise PublishError(status, str(message))
    if not isinstance(value, dict):
        raise PublishError(status, f"unexpected answer: {value!r}")
    return value


class Answers:
    """Sans-IO reader of the daemon's answers: bytes in, (status, body, closes) out.

    Strict about what fanout sends (HTTP/1.1 status line, Content-Length, no chunked
    bodies); anything else is a ProtocolError, after which the connection is dropped.
    """

    class ProtocolError(Exception):
        pass

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: tuple[int, int, bool] | None = None  # status, length, closes

    def feed(self, data: bytes) -> list[tuple[int, bytes, bool]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes, bool]] = []
        while True:
            if self._head is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > 65536:
                        raise self.ProtocolError("answer head too large")
                    return out
                self._head = self._parse_head(bytes(buf[:end]))
                del buf[: end + 4]
            status, length, closes = self._head
            if status == 100:  # an interim answer: the real one follows
                self._head = None
                continue
            if len(buf) < length:
                return out
            out.append((status, bytes(buf[:length]), closes))
            del buf[:length]
            self._head = None

    @classmethod
    def _parse_head(cls, head: bytes) -> tuple[int, int, bool]:
        if not head.startswith(b"HTTP/1.") or len(head) < 12 or not head[9:12].isdigit():
            raise cls.ProtocolError(f"not an HTTP/1.x answer: {head[:40]!r}")
        status = int(head[9:12])
        lower = head.lower()
        closes = b"\r\nconnection: close" in lower
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            if status == 100 or status == 204 or status == 304:
                return status, 0, closes
            raise cls.ProtocolError("answer without Content-Length")
        end = lower.find(b"\r\n", at + 2)
        value = lower[at + 17 : end if end >= 0 else len(lower)].strip()
        if not value.isdigit():
            raise cls.ProtocolError(f"bad Content-Length {value[:20]!r}")
        return status, int(value), closes


class Publisher:
    """Synchronous client; thread-safe (one request at a time on its connection)."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 5.0) -> None:
        self._path = socket_path
        self._timeout = timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._answers = Answers()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._timeout)
        try:
            sock.connect(self._path)
        except OSError as exc:
            sock.close()
            raise PublishError(0, f"cannot reach fanout at {self._path}: {exc}") from None
        self._sock = sock
        self._answers = Answers()
        return sock

    def _request(
        self, method: bytes, path: bytes, body: bytes = b"", ctype: bytes = _JSON
    ) -> dict[str, Any]:
        data = request(method, path, body, ctype)
        with self._lock:
            for attempt in (1, 2):
                reused = self._sock is not None
                sock = self._sock or self._connect()
                try:
                    sock.sendall(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close()
                    if reused and attempt == 1:
                        continue  # the daemon closed our idle connection; nothing was sent
                    raise PublishError(0, "fanout closed the connection") from None
                except OSError as exc:
                    self.close()
                    raise PublishError(0, f"cannot send to fanout: {exc}") from None
                try:
                    status, payload, closes = self._receive(sock)
                except _ClosedBeforeAnswer:
                    self.close()
                    if reused and attempt == 1:
                        continue  # closed before reading the request
                    raise PublishError(0, "fanout closed the connection before answering") from None
                except (OSError, Answers.ProtocolError) as exc:
                    self.close()
                    raise PublishError(0, f"no answer from fanout: {exc}") from None
                if closes:
                    self.close()
                return _result(status, payload)
        raise AssertionError("unreachable")

    def _receive(self, sock: socket.socket) -> tuple[int, bytes, bool]:
        answers = self._answers
        while True:
            chunk = sock.recv(_READ_SIZE)
            if not chunk:
                raise _ClosedBeforeAnswer
            got = answers.feed(chunk)
            if got:
                return got[0]  # one request in flight: one answer

    def publish(
        self,
        topic: str,
        data: Any = _UNSET,
        *,
        event: str = "message",
        user: str | None = None,
        text: str | None = None,
    ) -> dict[str, Any]:
        """Publish to a topic (only `user`'s connections on it if given): {"id", "sent"}."""
        return self._request(
            b"POST", b"/publish", _event_body(data, event, text, topic=topic, user=user)
        )

    def publish_many(self, events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Publish a batch (dicts shaped like publish's body) in one request, all or none:
        {"published", "ids", "sent"}."""
        return self._request(b"POST", b"/publish", _ndjson(events), _NDJSON)

    def broadcast(
        self, data: Any = _UNSET, *, event: str = "message", text: str | None = None
    ) -> dict[str, Any]:
        return self._request(b"POST", b"/broadcast", _event_body(data, event, text))

    def notify(
        self, user: str, data: Any = _UNSET, *, event: str = "message", text: str | None = None
    ) -> dict[str, Any]:
        return self._request(b"POST", _path("/notify/", user), _event_body(data, event, text))

    def send(
        self,
        connection: str,
        data: Any = _UNSET,
        *,
        event: str = "message",
        text: str | None = None,
    ) -> dict[str, Any]:
        return self._request(b"POST", _path("/send/", connection), _event_body(data, event, text))

    def stats(self) -> dict[str, Any]:
        return self._request(b"GET", b"/stats")

    def track(self, task_id: str, *, user: str | None = None, topic: str | None = None) -> Task:
        """Progress of one task on `progress:<task_id>`: `with publisher.track(id) as task:`."""
        return Task(self, task_id, user, topic)


class _ClosedBeforeAnswer(Exception):
    pass


def _path(prefix: str, name: str) -> bytes:
    return (prefix + quote(name, safe="")).encode("ascii")


class _Connection(asyncio.Protocol):
    """AsyncPublisher's connection: requests go out at once, answers resolve in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[tuple[int, bytes, bool]]] = (
            collections.deque()
        )
        self.answers = Answers()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            got = self.answers.feed(data)
        except Answers.ProtocolError as exc:
            self.fail(PublishError(0, f"no answer from fanout: {exc}"))
            return
        for answer in got:
            if not self.waiting:
                self.fail(PublishError(0, "fanout answered a request that was not sent"))
                return
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(answer)
            if answer[2]:  # Connection: close
                self.fail(PublishError(0, "fanout closed the connection before answering"))
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(PublishError(0, "fanout closed the connection before answering"))

    def fail(self, error: PublishError) -> None:
        """The stream is over (or out of step): every pending call gets the error."""
        self.closed = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.close()


def _expire(conn: _Connection, future: asyncio.Future[Any], timeout: float) -> None:
    if not future.done():
        future.set_exception(PublishError(0, f"no answer from fanout within {timeout} s"))
        # The answers behind this one can no longer be matched: start afresh.
        conn.fail(PublishError(0, "an earlier call on this connection timed out"))


class AsyncPublisher:
    """asyncio client; concurrent calls are pipelined on its one connection."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 5.0) -> None:
        self._path = socket_path
        self._timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    async def _connect(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # one connect for all the calls that wait on it
            conn = self._conn
            if conn is None or conn.closed:
                loop = asyncio.get_running_loop()
                try:
                    _, conn = await loop.create_unix_connection(_Connection, self._path)
                except OSError as exc:
                    raise PublishError(0, f"cannot reach fanout at {self._path}: {exc}") from None
                self._conn = conn
        return conn

    async def _request(
        self, method: bytes, path: bytes, body: bytes = b"", ctype: bytes = _JSON
    ) -> dict[str, Any]:
        data = request(method, path, body, ctype)
        conn = await self._connect()
        transport = conn.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, bytes, bool]] = loop.create_future()
        conn.waiting.append(future)
        transport.write(data)
        # A timer handle, not asyncio.wait_for: that wraps every call in a Task, which
        # was most of this client's CPU per publish.
        timer = loop.call_later(self._timeout, _expire, conn, future, self._timeout)
        try:
            status, payload, _ = await future
        except asyncio.CancelledError:
            # The answers behind this one can no longer be matched: start afresh.
            conn.fail(PublishError(0, "a call on this connection was cancelled"))
            raise
        finally:
            timer.cancel()
        return _result(status, payload)

    async def publish(
        self,
        topic: str,
        data: Any = _UNSET,
        *,
        event: str = "message",
        user: str | None = None,
        text: str | None = None,
    ) -> dict[str, Any]:
        return await self._request(
            b"POST", b"/publish", _event_body(data, event, text, topic=topic, user=user)
        )

    async def publish_many(self, events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        return await self._request(b"POST", b"/publish", _ndjson(events), _NDJSON)

    async def broadcast(
        self, data: Any = _UNSET, *, event: str = "message", text: str | None = None
    ) -> dict[str, Any]:
        return await self._request(b"POST", b"/broadcast", _event_body(data, event, text))

    async def notify(
        self, user: str, data: Any = _UNSET, *, event: str = "message", text: str | None = None
    ) -> dict[str, Any]:
        return await self._request(b"POST", _path("/notify/", user), _event_body(data, event, text))

    async def send(
        self,
        connection: str,
        data: Any = _UNSET,
        *,
        event: str = "message",
        text: str | None = None,
    ) -> dict[str, Any]:
        return await self._request(
            b"POST", _path("/send/", connection), _event_body(data, event, text)
        )

    async def stats(self) -> dict[str, Any]:
        return await self._request(b"GET", b"/stats")

    def track(
        self, task_id: str, *, user: str | None = None, topic: str | None = None
    ) -> AsyncTask:
        """Progress of one task: `async with publisher.track(id) as task:`."""
        return AsyncTask(self, task_id, user, topic)


# -- progress tracking ----------------------------------------------------------
#
# A task's state is published as `progress` events on its own topic, by default
# `progress:<task_id>`. List that topic pattern in [replay] latest_value_topics and
# a page opened late gets the current state at once, without an id to resume from.

PROGRESS_EVENT = "progress"
PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"

_progress_log = logging.getLogger("fanout.client")


def progress_data(task_id: str, progress: float, status: str, message: str) -> dict[str, Any]:
    """The body of a `progress` event, as fanout.js and the demo page read it."""
    return {"taskId": task_id, "progress": progress, "status": status, "message": message}


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return str(exc) or type(exc).__name__


class _TaskState:
    """What the sync and asyncio trackers share: naming, validation, the last value."""

    def __init__(self, task_id: str, user: str | None, topic: str | None) -> None:
        self.task_id = task_id
        self.topic = topic if topic is not None else f"progress:{task_id}"
        if not is_topic(self.topic):
            raise ValueError(f"task id {task_id!r} does not make a valid topic name")
        self.user = user
        self.progress: float = 0
        self.status = PENDING
        self.message = ""

    def _next(self, progress: float | None, status: str, message: str | None) -> dict[str, Any]:
        if progress is not None:
            if not 0 <= progress <= 100:
                raise ValueError(f"progress must be within 0..100, got {progress!r}")
            self.progress = progress
        if message is not None:
            self.message = message
        self.status = status
        return progress_data(self.task_id, self.progress, status, self.message)

    def _lost(self, exc: Exception) -> None:
        # Progress is advisory: a daemon restarting under a long job must not kill
        # the job. The topic keeps only the latest value, so the next update repairs
        # what a page shows.
        _progress_log.warning("progress of %s not published: %s", self.task_id, exc)


class Task(_TaskState):
    """Publishes a task's progress; a context manager that reports the outcome.

    Leaving the block normally publishes `completed` at 100; an exception publishes
    `failed` with its message and propagates. Publishing errors are logged, never
    raised: tracking must not fail the work it tracks.
    """

    def __init__(
        self, publisher: Publisher, task_id: str, user: str | None, topic: str | None
    ) -> None:
        super().__init__(task_id, user, topic)
        self._publisher = publisher

    def __enter__(self) -> Task:
        self.update(0)
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.complete()
        else:
            self.fail(_failure_message(exc))

    def pending(self, message: str = "") -> None:
        """Queued, not started (e.g. published by the web view that enqueues the job)."""
        self._send(self._next(0, PENDING, message))

    def update(self, progress: float, message: str | None = None) -> None:
        self._send(self._next(progress, RUNNING, message))

    def complete(self, message: str = "done") -> None:
        self._send(self._next(100, COMPLETED, message))

    def fail(self, message: str) -> None:
        self._send(self._next(None, FAILED, message))

    def _send(self, data: dict[str, Any]) -> None:
        try:
            self._publisher.publish(self.topic, data, event=PROGRESS_EVENT, user=self.user)
        except (PublishError, OSError) as exc:
            self._lost(exc)


class AsyncTask(_TaskState):
    """The asyncio twin of Task: `async with publisher.track(id) as task`."""

    def __init__(
        self, publisher: AsyncPublisher, task_id: str, user: str | None, topic: str | None
    ) -> None:
        super().__init__(task_id, user, topic)
        self._publisher = publisher

    async def __aenter__(self) -> AsyncTask:
        await self.update(0)
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            await self.complete()
        else:
            await self.fail(_failure_message(exc))

    async def pending(self, message: str = "") -> None:
        await self._send(self._next(0, PENDING, message))

    async def update(self, progress: float, message: str | None = None) -> None:
        await self._send(self._next(progress, RUNNING, message))

    async def complete(self, message: str = "done") -> None:
        await self._send(self._next(100, COMPLETED, message))

    async def fail(self, message: str) -> None:
        await self._send(self._next(None, FAILED, message))

    async def _send(self, data: dict[str, Any]) -> None:
        try:
            await self._publisher.publish(self.topic, data, event=PROGRESS_EVENT, user=self.user)
        except (PublishError, OSError, TimeoutError) as exc:
            self._lost(exc)
