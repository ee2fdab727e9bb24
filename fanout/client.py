"""Publisher clients for apps: sync (Django, Celery, scripts) and asyncio (FastAPI).

Each keeps one keep-alive connection to the control socket and reconnects when the
daemon has closed it (a restart, say). A request that fails after it was sent is
not retried: it may have been published, and publishing twice is worse than an
error the caller sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import h11
import orjson

from .names import is_topic

DEFAULT_SOCKET = "./run/fanout.sock"
_UNSET: Any = object()


class PublishError(Exception):
    """The daemon refused a request (status >= 400) or could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


def _event_body(data: Any, event: str, text: str | None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"event": event, **{k: v for k, v in extra.items() if v is not None}}
    if text is not None:
        body["text"] = text
    else:
        body["data"] = None if data is _UNSET else data
    return orjson.dumps(body)


def _ndjson(events: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(dict(e)) + b"\n" for e in events)


def _result(status: int, payload: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        value = {"error": payload.decode("utf-8", "replace")}
    if status >= 400:
        raise PublishError(status, str(value.get("error", value)))
    if not isinstance(value, dict):
        raise PublishError(status, f"unexpected answer: {value!r}")
    return value


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Publisher:
    """Synchronous client; thread-safe (one request at a time on its connection)."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 5.0) -> None:
        self._conn = _UnixConnection(socket_path, timeout)
        self._lock = threading.Lock()
        self._path = socket_path

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _request(
        self, method: str, path: str, body: bytes = b"", ctype: str = "application/json"
    ) -> dict[str, Any]:
        headers = {"Content-Type": ctype} if body else {}
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn.sock is not None
                try:
                    self._conn.request(method, path, body=body or None, headers=headers)
                except (BrokenPipeError, ConnectionResetError):
                    self._conn.close()
                    if reused and attempt == 1:
                        continue  # the daemon closed our idle connection; nothing was sent
                    raise
                except OSError as exc:
                    self._conn.close()
                    raise PublishError(0, f"cannot reach fanout at {self._path}: {exc}") from None
                try:
                    response = self._conn.getresponse()
                    payload = response.read()
                except http.client.RemoteDisconnected:
                    self._conn.close()
                    if reused and attempt == 1:
                        continue  # closed before reading the request
                    raise
                except (OSError, http.client.HTTPException):
                    self._conn.close()
                    raise
                if response.will_close:
                    self._conn.close()
                return _result(response.status, payload)
        raise AssertionError("unreachable")

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
            "POST", "/publish", _event_body(data, event, text, topic=topic, user=user)
        )

    def publish_many(self, events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Publish a batch (dicts shaped like publish's body), all or none."""
        return self._request("POST", "/publish", _ndjson(events), "application/x-ndjson")

    def broadcast(
        self, data: Any = _UNSET, *, event: str = "message", text: str | None = None
    ) -> dict[str, Any]:
        return self._request("POST", "/broadcast", _event_body(data, event, text))

    def notify(
        self, user: str, data: Any = _UNSET, *, event: str = "message", text: str | None = None
    ) -> dict[str, Any]:
        return self._request(
            "POST", f"/notify/{quote(user, safe='')}", _event_body(data, event, text)
        )

    def send(
        self,
        connection: str,
        data: Any = _UNSET,
        *,
        event: str = "message",
        text: str | None = None,
    ) -> dict[str, Any]:
        return self._request(
            "POST", f"/send/{quote(connection, safe='')}", _event_body(data, event, text)
        )

    def stats(self) -> dict[str, Any]:
        return self._request("GET", "/stats")

    def track(self, task_id: str, *, user: str | None = None, topic: str | None = None) -> Task:
        """Progress of one task on `progress:<task_id>`: `with publisher.track(id) as task:`."""
        return Task(self, task_id, user, topic)


class AsyncPublisher:
    """asyncio client; one request at a time on its connection."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 5.0) -> None:
        self._path = socket_path
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11 = h11.Connection(h11.CLIENT)

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(self._path)
            except OSError as exc:
                raise PublishError(0, f"cannot reach fanout at {self._path}: {exc}") from None
            self._h11 = h11.Connection(h11.CLIENT)
        return self._reader, self._writer

    async def _request(
        self, method: str, path: str, body: bytes = b"", ctype: str = "application/json"
    ) -> dict[str, Any]:
        async with self._lock:
            try:
                return await asyncio.wait_for(
                    self._exchange(method, path, body, ctype), self._timeout
                )
            except BaseException:
                await self.close()
                raise

    async def _exchange(self, method: str, path: str, body: bytes, ctype: str) -> dict[str, Any]:
        reader, writer = await self._connect()
        conn = self._h11
        headers = [("Host", "localhost"), ("Content-Length", str(len(body)))]
        if body:
            headers.append(("Content-Type", ctype))
        data = conn.send(h11.Request(method=method, target=path, headers=headers)) or b""
        data += conn.send(h11.Data(data=body)) or b"" if body else b""
        data += conn.send(h11.EndOfMessage()) or b""
        writer.write(data)
        await writer.drain()
        status = 0
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                received = await reader.read(65536)
                if not received:
                    raise PublishError(0, "fanout closed the connection before answering")
                conn.receive_data(received)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.close()
        return _result(status, b"".join(chunks))

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
            "POST", "/publish", _event_body(data, event, text, topic=topic, user=user)
        )

    async def publish_many(self, events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        return await self._request("POST", "/publish", _ndjson(events), "application/x-ndjson")

    async def broadcast(
        self, data: Any = _UNSET, *, event: str = "message", text: str | None = None
    ) -> dict[str, Any]:
        return await self._request("POST", "/broadcast", _event_body(data, event, text))

    async def notify(
        self, user: str, data: Any = _UNSET, *, event: str = "message", text: str | None = None
    ) -> dict[str, Any]:
        return await self._request(
            "POST", f"/notify/{quote(user, safe='')}", _event_body(data, event, text)
        )

    async def send(
        self,
        connection: str,
        data: Any = _UNSET,
        *,
        event: str = "message",
        text: str | None = None,
    ) -> dict[str, Any]:
        return await self._request(
            "POST", f"/send/{quote(connection, safe='')}", _event_body(data, event, text)
        )

    async def stats(self) -> dict[str, Any]:
        return await self._request("GET", "/stats")

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
        except (PublishError, OSError, http.client.HTTPException) as exc:
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
