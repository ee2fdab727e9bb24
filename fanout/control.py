"""The publishers' HTTP API on the control Unix socket (h11, keep-alive).

Every rejected request gets a 4xx with a JSON body saying what is wrong, and
publishes nothing: bodies are decoded and validated whole before the hub is called.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, Union, cast
from urllib.parse import unquote, urlsplit

import h11
import orjson

from . import metrics
from .names import is_user
from .publish import NDJSON_TYPES, BadRequest, decode_event, decode_publish, media_type
from .route import Delivery

log = logging.getLogger("fanout.control")

MAX_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    allow: str = ""


def _json(status: int, value: Any) -> Answer:
    return Answer(status, orjson.dumps(value) + b"\n")


def _error(status: int, message: str, allow: str = "") -> Answer:
    return Answer(status, orjson.dumps({"error": message}) + b"\n", allow=allow)


def _delivered(d: Delivery) -> Answer:
    return _json(200, {"id": d.id, "sent": d.sent, "total": d.total})


class ServiceUnavailable(Exception):
    """The backend cannot publish safely now (the backplane is down): 503."""


T = TypeVar("T")
Maybe = Union[T, Awaitable[T]]  # noqa: UP007 - a generic alias needs Union here


class Backend(Protocol):
    """What publishes: the hub in a single process, the supervisor with workers,
    the Redis backplane across hosts (whose answers come asynchronously)."""

    @property
    def draining(self) -> bool: ...

    def publish_many(
        self, items: list[tuple[str, str, bytes, str | None]]
    ) -> Maybe[list[Delivery]]: ...
    def broadcast(self, event: str, payload: bytes) -> Maybe[Delivery]: ...
    def notify(self, user: str, event: str, payload: bytes) -> Maybe[Delivery]: ...
    def send(self, connection_id: str, event: str, payload: bytes) -> Maybe[Delivery | None]: ...


Snapshot = Callable[[], "dict[str, Any] | Awaitable[dict[str, Any]]"]
Reply = Answer | Awaitable[Answer]


def _then(value: Maybe[T], answer: Callable[[T], Answer]) -> Reply:
    """Answer now, or when the backend's awaitable is done."""
    if not isinstance(value, Awaitable):
        return answer(value)

    async def later(pending: Awaitable[T]) -> Answer:
        try:
            return answer(await pending)
        except ServiceUnavailable as exc:
            return _error(503, str(exc))

    return later(value)


class ControlApi:
    """Routing and handlers; no I/O, so it can be called from tests directly."""

    def __init__(self, backend: Backend, snapshot: Snapshot) -> None:
        self._backend = backend
        self._snapshot = snapshot
        self._routes: dict[str, tuple[str, Callable[[str, str, bytes], Reply]]] = {
            "/publish": ("POST", self._publish),
            "/broadcast": ("POST", self._broadcast),
            "/notify/": ("POST", self._notify),
            "/send/": ("POST", self._send),
            "/stats": ("GET", self._stats),
            "/healthz": ("GET", self._healthz),
            "/metrics": ("GET", self._metrics),
        }

    def handle(self, method: str, target: str, content_type: str, body: bytes) -> Reply:
        try:
            path = urlsplit(target).path
        except ValueError:
            return _error(400, f"malformed request target {target[:80]!r}")
        prefix = path if path in self._routes else path[: path.find("/", 1) + 1]
        route = self._routes.get(prefix) if prefix else None
        if route is None or (prefix.endswith("/") and prefix == path):
            return _error(404, f"no such endpoint: {path}")
        allowed, handler = route
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            return _error(405, f"{path} takes {allowed}", allow=allowed)
        try:
            return handler(unquote(path[len(prefix) :]), content_type, body)
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        except ServiceUnavailable as exc:
            return _error(503, str(exc))
        except Exception as exc:
            log.exception("control request %s %s failed", method, path)
            return _error(500, f"internal error: {exc}")

    def _publish(self, _: str, content_type: str, body: bytes) -> Reply:
        publications = decode_publish(body, content_type)
        items = [(p.topic, p.event, p.payload, p.user) for p in publications]
        batch = media_type(content_type) in NDJSON_TYPES

        def answer(deliveries: list[Delivery]) -> Answer:
            if not batch:
                return _json(200, {"id": deliveries[0].id, "sent": deliveries[0].sent})
            return _json(
                200,
                {
                    "published": len(deliveries),
                    "ids": [d.id for d in deliveries],
                    "sent": [d.sent for d in deliveries],
                },
            )

        return _then(self._backend.publish_many(items), answer)

    def _broadcast(self, _: str, content_type: str, body: bytes) -> Reply:
        p = decode_event(body, content_type)
        return _then(self._backend.broadcast(p.event, p.payload), _delivered)

    def _notify(self, user: str, content_type: str, body: bytes) -> Reply:
        if not is_user(user):
            raise BadRequest(f"invalid user {user[:80]!r}")
        p = decode_event(body, content_type)
        return _then(self._backend.notify(user, p.event, p.payload), _delivered)

    def _send(self, connection: str, content_type: str, body: bytes) -> Reply:
        p = decode_event(body, content_type)

        def answer(d: Delivery | None) -> Answer:
            if d is None:
                return _error(404, f"no open connection with id {connection[:80]!r}")
            return _delivered(d)

        return _then(self._backend.send(connection, p.event, p.payload), answer)

    def _stats(self, _: str, __: str, ___: bytes) -> Reply:
        return self._with_snapshot(lambda stats: _json(200, stats))

    def _metrics(self, _: str, __: str, ___: bytes) -> Reply:
        return self._with_snapshot(
            lambda stats: Answer(200, metrics.render(stats), metrics.CONTENT_TYPE)
        )

    def _with_snapshot(self, answer: Callable[[dict[str, Any]], Answer]) -> Reply:
        stats = self._snapshot()
        if isinstance(stats, dict):
            return answer(stats)

        async def later(pending: Awaitable[dict[str, Any]]) -> Answer:
            return answer(await pending)

        return later(stats)

    def _healthz(self, _: str, __: str, ___: bytes) -> Answer:
        if self._backend.draining:
            return _json(503, {"status": "draining"})
        return _json(200, {"status": "ok"})


class ControlProtocol(asyncio.Protocol):
    def __init__(self, api: ControlApi, max_body_bytes: int) -> None:
        self._api = api
        self._max_body = max_body_bytes
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._transport: asyncio.Transport | None = None
        self._request: h11.Request | None = None
        self._body = bytearray()
        # Set while an answer is computed asynchronously (stats across workers);
        # later pipelined requests wait in h11's buffer, so answers keep their order.
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self._conn.receive_data(b"")
        self._process()
        return False

    def _process(self) -> None:
        conn = self._conn
        while self._transport is not None and not self._transport.is_closing() and not self._busy:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint, f"malformed request: {exc}")
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                    continue
                return
            if isinstance(event, h11.Request):
                self._start(event)
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self._max_body:
                    self._too_large()
            elif isinstance(event, h11.EndOfMessage):
                self._finish()
            elif isinstance(event, h11.ConnectionClosed):
                self._transport.close()
                return

    def _start(self, request: h11.Request) -> None:
        self._request = request
        self._body = bytearray()
        for name, value in request.headers:
            if name == b"content-length" and int(value) > self._max_body:
                self._too_large()
                return

    def _too_large(self) -> None:
        self._body = bytearray()
        self._fail(413, f"request body larger than {self._max_body} bytes (control.max_body_bytes)")

    def _finish(self) -> None:
        request = self._request
        assert request is not None
        content_type = ""
        for name, value in request.headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
        answer = self._api.handle(
            request.method.decode("ascii"),
            request.target.decode("ascii", "replace"),
            content_type,
            bytes(self._body),
        )
        self._body = bytearray()
        if isinstance(answer, Answer):
            self._send(answer, close=False)
            return
        self._busy = True
        task = asyncio.ensure_future(answer)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Future[Answer]) -> None:
        self._busy = False
        if self._transport is None or self._transport.is_closing():
            return
        try:
            answer = task.result()
        except Exception as exc:
            log.exception("control request failed")
            answer = _error(500, f"internal error: {exc}")
        self._send(answer, close=False)
        self._process()

    def _fail(self, status: int, message: str) -> None:
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._send(_error(status, message), close=True)
        assert self._transport is not None
        self._transport.close()

    def _send(self, answer: Answer, close: bool) -> None:
        headers = [
            ("Content-Type", answer.content_type),
            ("Content-Length", str(len(answer.body))),
        ]
        if answer.allow:
            headers.append(("Allow", answer.allow))
        if close:
            headers.append(("Connection", "close"))
        conn = self._conn
        data = conn.send(h11.Response(status_code=answer.status, headers=headers))
        assert data is not None
        if self._request is None or self._request.method != b"HEAD":
            data += conn.send(h11.Data(data=answer.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        assert self._transport is not None
        self._transport.write(data)
        if conn.our_state is h11.MUST_CLOSE:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
