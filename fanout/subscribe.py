"""Subscribe requests, sans-IO: an h11 Request in, Subscribe or Reject out."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

from .names import is_topic, is_user


@dataclass(frozen=True, slots=True)
class Subscribe:
    topics: frozenset[str]
    last_event_id: str | None
    user: str | None
    # HTTP/1.1 peers get a chunked body; HTTP/1.0 peers (nginx's default upstream
    # protocol) get a raw body ended by closing the connection.
    chunked: bool


@dataclass(frozen=True, slots=True)
class Reject:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Page:
    """A request for one of the daemon's own pages (fanout.js, the demo), not a stream."""

    method: str
    path: str
    query: str
    if_none_match: str | None


@dataclass(frozen=True, slots=True)
class Identity:
    """How the user is found, from [auth] and the listener the request came in on."""

    header: bytes | None  # lower-case header name, or None when auth mode is "none"
    trusted: bool
    allow_anonymous: bool


EVENTS_PATH = "/events"
# Answered by fanout.pages; any method, so it can say 405 itself.
PAGE_PATHS = frozenset({"/fanout.js", "/demo", "/demo/jobs", "/ops"})
MAX_ID_LENGTH = 128


def _header(request: h11.Request, name: bytes) -> str | None:
    for key, value in request.headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _user(request: h11.Request, identity: Identity) -> str | Reject | None:
    if identity.header is None:
        return None
    value = _header(request, identity.header)
    if value is not None and not identity.trusted:
        # A browser must not pick its own identity: only a proxy in front of a
        # trusted listener may set this header.
        return Reject(403, "identity header is only accepted on a trusted listener")
    if value is not None:
        if not is_user(value):
            return Reject(403, "invalid user in identity header")
        return value
    if not identity.allow_anonymous:
        return Reject(401, "authentication required")
    return None


def parse(request: h11.Request, identity: Identity, max_topics: int) -> Subscribe | Page | Reject:
    try:
        target = urlsplit(request.target.decode("ascii", "replace"))
    except ValueError:
        return Reject(400, "malformed request target")
    path = unquote(target.path)
    if path in PAGE_PATHS:
        method = request.method.decode("ascii", "replace")
        return Page(method, path, target.query, _header(request, b"if-none-match"))
    if request.method != b"GET":
        return Reject(405, "only GET is allowed here", (("Allow", "GET"),))
    if path != EVENTS_PATH:
        return Reject(404, f"no such path: {target.path} (subscribe at {EVENTS_PATH})")
    topics: list[str] = []
    last_event_id = None
    try:
        query = parse_qsl(target.query, keep_blank_values=True, errors="strict")
    except (ValueError, UnicodeDecodeError):
        return Reject(400, "malformed query string")
    for key, value in query:
        if key == "topic":
            if not is_topic(value):
                return Reject(400, f"invalid topic {value[:80]!r}")
            topics.append(value)
        elif key == "lastEventId" and value:
            # For clients that cannot set headers; the header wins when both are set.
            last_event_id = value
    if len(set(topics)) > max_topics:
        return Reject(400, f"too many topics (at most {max_topics})")
    header_id = _header(request, b"last-event-id")
    if header_id:
        last_event_id = header_id
    if last_event_id is not None and len(last_event_id) > MAX_ID_LENGTH:
        last_event_id = last_event_id[:MAX_ID_LENGTH]
    user = _user(request, identity)
    if isinstance(user, Reject):
        return user
    chunked = request.http_version == b"1.1"
    return Subscribe(frozenset(topics), last_event_id, user, chunked)


def response(status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete one-line-text answer that closes the connection."""
    body = (reason + "\n").encode()
    lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}"]
    lines += [
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Cache-Control: no-store",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_PHRASES = {
    200: "OK",
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
