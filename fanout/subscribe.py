"""Subscribe requests, sans-IO: an h11 Request in, Subscribe, Page, Answer or Reject out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

from . import sse
from .access import Access, Denied
from .cors import Headers
from .grants import Grants
from .names import is_topic

# What a connection may read when nothing restricts it.
EVERY_TOPIC = Grants.of(["*"], None)


@dataclass(frozen=True, slots=True)
class Subscribe:
    topics: frozenset[str]
    last_event_id: str | None
    user: str | None
    # HTTP/1.1 peers get a chunked body; HTTP/1.0 peers (nginx's default upstream
    # protocol) get a raw body ended by closing the connection.
    chunked: bool
    # What the connection may read for its whole life (fanout.access): checked
    # against `topics` already; kept for subscriptions changed later.
    grants: Grants = EVERY_TOPIC
    # The token's expiry (seconds since the epoch) and public info claim, mode "jwt".
    exp: float | None = None
    info: dict[str, Any] | None = None
    # Extra response headers for the stream's head (CORS).
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete answer that is neither a stream nor a refusal: a CORS preflight."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Page:
    """A request for one of the daemon's own pages (fanout.js, the demo), not a stream."""

    method: str
    path: str
    query: str
    if_none_match: str | None


# Who the user is and what it may read, per listener: fanout.access.Access.
Identity = Access

EVENTS_PATH = "/events"
# Answered by fanout.pages; any method, so it can say 405 itself.
PAGE_PATHS = frozenset({"/fanout.js", "/demo", "/demo/jobs", "/ops"})
MAX_ID_LENGTH = 128


def _header(request: h11.Request, name: bytes) -> str | None:
    for key, value in request.headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _preflight(request: h11.Request, identity: Access) -> Answer | Reject | None:
    preflight = identity.preflight(
        _header(request, b"origin"), _header(request, b"access-control-request-method")
    )
    if preflight is None:
        return None  # not a CORS preflight (or CORS is off): an OPTIONS like any other
    if preflight.status == 204:
        return Answer(204, preflight.headers)
    return Reject(preflight.status, preflight.reason, preflight.headers)


@dataclass(frozen=True, slots=True)
class _Query:
    topics: frozenset[str]
    last_event_id: str | None
    tokens: tuple[str, ...]


def _query(query_string: str, max_topics: int, cors: Headers) -> _Query | Reject:
    topics: list[str] = []
    tokens: list[str] = []
    last_event_id = None
    try:
        query = parse_qsl(query_string, keep_blank_values=True, errors="strict")
    except (ValueError, UnicodeDecodeError):
        return Reject(400, "malformed query string", cors)
    for key, value in query:
        if key == "topic":
            if not is_topic(value):
                return Reject(400, f"invalid topic {value[:80]!r}", cors)
            topics.append(value)
        elif key == "lastEventId" and value:
            # For clients that cannot set headers; the header wins when both are set.
            last_event_id = value
        elif key == "token":
            tokens.append(value)
    if len(set(topics)) > max_topics:
        return Reject(400, f"too many topics (at most {max_topics})", cors)
    return _Query(frozenset(topics), last_event_id, tuple(tokens))


def parse(
    request: h11.Request, identity: Access, max_topics: int
) -> Subscribe | Page | Answer | Reject:
    try:
        target = urlsplit(request.target.decode("ascii", "replace"))
    except ValueError:
        return Reject(400, "malformed request target")
    path = unquote(target.path)
    if path in PAGE_PATHS:
        method = request.method.decode("ascii", "replace")
        return Page(method, path, target.query, _header(request, b"if-none-match"))
    if path == EVENTS_PATH and request.method == b"OPTIONS":
        preflight = _preflight(request, identity)
        if preflight is not None:
            return preflight
    if request.method != b"GET":
        return Reject(405, "only GET is allowed here", (("Allow", "GET"),))
    if path != EVENTS_PATH:
        return Reject(404, f"no such path: {target.path} (subscribe at {EVENTS_PATH})")
    cors = identity.cors_headers(_header(request, b"origin"))
    if cors is None:
        return Reject(403, "origin not allowed", (("Vary", "Origin"),))
    query = _query(target.query, max_topics, cors)
    if isinstance(query, Reject):
        return query
    last_event_id = _header(request, b"last-event-id") or query.last_event_id
    if last_event_id is not None and len(last_event_id) > MAX_ID_LENGTH:
        last_event_id = last_event_id[:MAX_ID_LENGTH]
    admitted = identity.identify(request.headers, query.tokens)
    if isinstance(admitted, Denied):
        return Reject(admitted.status, admitted.reason, cors + admitted.headers)
    denied = identity.check_topics(admitted, query.topics)
    if denied is not None:
        return Reject(denied.status, denied.reason, cors + denied.headers)
    chunked = request.http_version == b"1.1"
    return Subscribe(
        query.topics,
        last_event_id,
        admitted.user,
        chunked,
        admitted.grants,
        admitted.exp,
        admitted.info,
        cors,
    )


def stream_head(request: Subscribe) -> bytes:
    """The stream's status line and headers, with the request's extra headers (CORS)."""
    head = sse.STREAM_HEAD_CHUNKED if request.chunked else sse.STREAM_HEAD_RAW
    if not request.headers:
        return head
    extra = "".join(f"{name}: {value}\r\n" for name, value in request.headers)
    # Before the blank line that ends the head.
    return head[:-2] + extra.encode("latin-1") + b"\r\n"


def response(status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete one-line-text answer that closes the connection (204: no body)."""
    body = (reason + "\n").encode() if status != 204 else b""
    lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}"]
    if status != 204:
        lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
    lines += ["Connection: close", "Cache-Control: no-store"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_PHRASES = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
