"""Server-Sent Events framing, sans-IO: values in, bytes out.

An event is encoded once into its SSE text, and that text is wrapped once per body
framing: chunked for HTTP/1.1 peers, raw for HTTP/1.0 peers (nginx's default
`proxy_http_version` for upstreams). The resulting bytes objects are shared by every
subscriber; nothing here runs per connection.
"""

from __future__ import annotations

import re

# The SSE grammar ends a field at CR, LF or CRLF, so none may appear inside an id or
# an event name; data is split into one `data:` line per line instead.
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")


class FrameError(ValueError):
    """A field value that cannot be represented in the SSE wire format."""


def _field(name: str, value: str) -> bytes:
    if _FORBIDDEN_IN_FIELD.search(value):
        raise FrameError(f"{name} must not contain CR, LF or NUL: {value!r}")
    return f"{name}: {value}\n".encode()


def _plain(value: str) -> bool:
    return "\n" not in value and "\r" not in value and "\x00" not in value


def encode_event(data: str | bytes, *, id: str | None = None, event: str | None = None) -> bytes:
    """The SSE text of one event: `id:`, `event:`, one `data:` line per line, blank line.

    `data` as bytes must be UTF-8 (compact JSON from the publish path is).
    """
    if isinstance(data, str):
        data = data.encode()
    # The publish path's shape (an id, an event name, one line of compact JSON), in
    # one formatting: a third of the general path's cost. `in` tests beat the regex.
    if (
        id is not None
        and event is not None
        and b"\n" not in data
        and b"\r" not in data
        and _plain(id)
        and _plain(event)
    ):
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (id.encode(), event.encode(), data)
    out = []
    if id is not None:
        out.append(_field("id", id))
    if event is not None:
        out.append(_field("event", event))
    for line in _LINE_BREAK.split(data):
        out.append(b"data: " + line + b"\n")
    out.append(b"\n")
    return b"".join(out)


def encode_retry(retry_ms: int) -> bytes:
    """A `retry:` field alone: sets the client's reconnect delay, dispatches nothing."""
    return b"retry: %d\n\n" % retry_ms


def encode_comment(text: str = "") -> bytes:
    """A comment line, ignored by clients; as a heartbeat it keeps proxies from timing out."""
    if _FORBIDDEN_IN_FIELD.search(text):
        raise FrameError(f"comment must not contain CR, LF or NUL: {text!r}")
    return f":{text}\n\n".encode()


def chunk(body: bytes) -> bytes:
    """One HTTP/1.1 chunk: size in hex, CRLF, body, CRLF (as h11's ChunkedWriter)."""
    return b"%x\r\n%b\r\n" % (len(body), body)


LAST_CHUNK = b"0\r\n\r\n"

HEARTBEAT = encode_comment()


class Frame:
    """One event, encoded once, in both body framings; shared by all subscribers."""

    __slots__ = ("chunked", "raw")

    def __init__(self, body: bytes) -> None:
        self.raw = body
        self.chunked = chunk(body)

    @classmethod
    def from_parts(cls, raw: bytes, chunked: bytes) -> Frame:
        """A frame encoded elsewhere (another process), taken as it is."""
        frame = cls.__new__(cls)
        frame.raw = raw
        frame.chunked = chunked
        return frame

    def for_peer(self, chunked: bool) -> bytes:
        return self.chunked if chunked else self.raw


HEARTBEAT_FRAME = Frame(HEARTBEAT)


def join(frames: list[Frame], chunked: bool) -> bytes:
    """Several frames as one write; each keeps its own chunk header."""
    if chunked:
        return b"".join([f.chunked for f in frames])
    return b"".join([f.raw for f in frames])


_STREAM_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\n"
    # Tells nginx not to buffer this response even if proxy_buffering is on.
    b"X-Accel-Buffering: no\r\n"
)
STREAM_HEAD_CHUNKED = _STREAM_HEADERS + b"Transfer-Encoding: chunked\r\n\r\n"
# An HTTP/1.0 peer cannot read chunks: the body runs until the connection closes.
STREAM_HEAD_RAW = _STREAM_HEADERS + b"Connection: close\r\n\r\n"
