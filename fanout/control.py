"""The publishers' HTTP API on the control Unix socket: routing and handlers.

Every rejected request gets a 4xx with a JSON body saying what is wrong, and
publishes nothing: bodies are decoded and validated whole before the backend is
called. The HTTP/1.1 connection itself (parsing, pipelining, framing of answers) is
`controlhttp.ControlProtocol`, re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, Union
from urllib.parse import unquote, urlsplit

import orjson

from . import metrics
from .names import is_user
from .publish import BadRequest, decode_event, decode_publish_items
from .route import Delivery

log = logging.getLogger("fanout.control")

_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE


class Answer:
    """What a handler answers: status, body, and the headers that vary."""

    __slots__ = ("allow", "body", "content_type", "status")

    def __init__(
        self, status: int, body: bytes, content_type: str = "application/json", allow: str = ""
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.allow = allow

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:60]!r})"


def _json(status: int, value: Any) -> Answer:
    return Answer(status, orjson.dumps(value, option=_APPEND_NEWLINE))


def error(status: int, message: str, allow: str = "") -> Answer:
    return Answer(status, orjson.dumps({"error": message}, option=_APPEND_NEWLINE), allow=allow)


def _delivered(d: Delivery) -> Answer:
    return _json(200, {"id": d.id, "sent": d.sent, "total": d.total})


def _published(deliveries: list[Delivery]) -> Answer:
    d = deliveries[0]
    return Answer(200, orjson.dumps({"id": d.id, "sent": d.sent}, option=_APPEND_NEWLINE))


def _published_batch(deliveries: list[Delivery]) -> Answer:
    return _json(
        200,
        {
            "published": len(deliveries),
            "ids": [d.id for d in deliveries],
            "sent": [d.sent for d in deliveries],
        },
    )


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
    # Not isinstance(value, Awaitable): an ABC check costs more than the rest of this.
    if not hasattr(value, "__await__"):
        return answer(value)

    async def later(pending: Awaitable[T]) -> Answer:
        try:
            return answer(await pending)
        except ServiceUnavailable as exc:
            return error(503, str(exc))

    return later(value)


Handler = Callable[[str, str, bytes], Reply]


class ControlApi:
    """Routing and handlers; no I/O, so it can be called from tests directly."""

    def __init__(self, backend: Backend, snapshot: Snapshot) -> None:
        self._backend = backend
        self._snapshot = snapshot
        self._routes: dict[str, tuple[str, Handler]] = {
            "/publish": ("POST", self._publish),
            "/broadcast": ("POST", self._broadcast),
            "/notify/": ("POST", self._notify),
            "/send/": ("POST", self._send),
            "/stats": ("GET", self._stats),
            "/healthz": ("GET", self._healthz),
            "/metrics": ("GET", self._metrics),
        }
        self._exact = {k: v for k, v in self._routes.items() if not k.endswith("/")}

    def handle(self, method: str, target: str, content_type: str, body: bytes) -> Reply:
        route = self._exact.get(target)
        if route is not None:  # the common case: an exact path, no query
            path, suffix = target, ""
        else:
            try:
                path = urlsplit(target).path
            except ValueError:
                return error(400, f"malformed request target {target[:80]!r}")
            prefix = path if path in self._routes else path[: path.find("/", 1) + 1]
            route = self._routes.get(prefix) if prefix else None
            if route is None or (prefix.endswith("/") and prefix == path):
                return error(404, f"no such endpoint: {path[:200]}")
            suffix = unquote(path[len(prefix) :])
        allowed, handler = route
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            return error(405, f"{path} takes {allowed}", allow=allowed)
        try:
            return handler(suffix, content_type, body)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except ServiceUnavailable as exc:
            return error(503, str(exc))
        except Exception as exc:
            # A bug, not bad input: bad input is BadRequest, whatever its shape.
            log.exception("control request %s %s failed", method, path)
            return error(500, f"internal error: {exc}")

    def _publish(self, _: str, content_type: str, body: bytes) -> Reply:
        items, batch = decode_publish_items(body, content_type)
        return _then(self._backend.publish_many(items), _published_batch if batch else _published)

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
                return error(404, f"no open connection with id {connection[:80]!r}")
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


# The protocol lives in its own module (one concept each); callers import it from here.
from .controlhttp import ControlProtocol  # noqa: E402

__all__ = ["Answer", "Backend", "ControlApi", "ControlProtocol", "ServiceUnavailable", "error"]
