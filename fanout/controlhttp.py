"""HTTP/1.1 on the control socket: httptools (llhttp) parses, answers leave in order.

Why not h11 here: the control socket is the publish path, and h11's pure-Python
parsing and response building cost ~100 µs per request, most of a publish. llhttp
(Node's parser, which uvicorn uses through httptools) parses in C and is strict where
RFC 9112 says a server must be: a request with both Content-Length and
Transfer-Encoding is refused, and so are bad chunk sizes, bare LFs and the like.

What this module adds on top of the parser:
- pipelining: every request read in one `data_received` is answered in order, and the
  answers leave in one `write`. An answer computed asynchronously (a backplane
  publish, stats across workers) holds the requests behind it until it is written:
  they are neither run nor answered out of turn;
- `Expect: 100-continue` is answered `100 Continue` (curl sends it for larger
  bodies and waits a second without it), or with the refusal when the body would be
  too large;
- bounds: the request head (16 KiB, h11's and Node's order of size) and the body
  (`control.max_body_bytes`), whether they arrive in one read or many;
- refusals: malformed requests get a 4xx naming the problem, then the connection is
  closed and nothing after the bad request is run (RFC 9112 6.1, 11.2). Logged at
  debug: a bad client is not the daemon's news.
"""

from __future__ import annotations

import asyncio
import enum
import http
import logging
from collections import deque
from collections.abc import Awaitable
from typing import cast

import httptools

from .control import Answer, ControlApi, error

log = logging.getLogger("fanout.control")

MAX_HEADER_BYTES = 16 * 1024
# Requests parsed but not yet answered (waiting behind an asynchronous answer) before
# reading pauses: a client that pipelines without end cannot grow the queue.
MAX_QUEUED = 256

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class State(enum.Enum):
    OPEN = "open"  # reading and answering requests
    CLOSING = "closing"  # the last answer is queued; nothing more is read or run
    CLOSED = "closed"


_TRANSITIONS = {
    State.OPEN: {State.CLOSING, State.CLOSED},
    State.CLOSING: {State.CLOSED},
    State.CLOSED: set(),
}


class Refused(Exception):
    """The request cannot be served; the connection ends after this answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Request:
    """One parsed request, waiting for its turn to run."""

    __slots__ = ("body", "connection", "content_type", "head_only", "method", "target")

    def __init__(
        self, method: str, target: str, content_type: str, body: bytes, connection: int
    ) -> None:
        self.method = method
        self.target = target
        self.content_type = content_type
        self.body = body
        self.connection = connection  # _KEEP, _CLOSE or _KEEP_10
        self.head_only = method == "HEAD"


# -- answers, sans-IO -------------------------------------------------------------

_heads: dict[tuple[int, str, str, int], bytes] = {}
_KEEP, _CLOSE, _KEEP_10 = 0, 1, 2  # the Connection header: none, close, keep-alive


def render(answer: Answer, connection: int, head_only: bool = False) -> bytes:
    """The whole response: status line and headers (built once per shape), body."""
    key = (answer.status, answer.content_type, answer.allow, connection)
    head = _heads.get(key)
    if head is None:
        head = _heads[key] = _build_head(*key)
    body = answer.body
    if head_only:
        return head % len(body)
    return head % len(body) + body


def _build_head(status: int, content_type: str, allow: str, connection: int) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}"]
    if allow:
        lines.append(f"Allow: {allow}")
    if connection == _CLOSE:
        lines.append("Connection: close")
    elif connection == _KEEP_10:
        lines.append("Connection: keep-alive")
    # `%d` is filled with the body's length; nothing else in a head holds a `%`.
    head = "\r\n".join(lines).replace("%", "%%") + "\r\nContent-Length: %d\r\n\r\n"
    return head.encode("latin-1")


# -- the protocol -----------------------------------------------------------------


class ControlProtocol(asyncio.Protocol):
    """One control connection: llhttp callbacks collect requests, `_run` answers them."""

    def __init__(
        self, api: ControlApi, max_body_bytes: int, max_header_bytes: int = MAX_HEADER_BYTES
    ) -> None:
        self._api = api
        self._max_body = max_body_bytes
        self._max_head = max_header_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._state = State.OPEN
        self._queue: deque[Request | bytes | Refused] = deque()
        self._out: list[bytes] = []
        self._busy = False  # an asynchronous answer is being computed
        self._eof = False
        self._paused = False  # by the transport's flow control (the client is not reading)
        self._reading = True
        # The request being parsed.
        self._url: list[bytes] = []
        self._content_type = b""
        self._expect = b""
        self._content_length = -1
        self._chunked = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0  # bytes of the head seen in callbacks (a lower bound)
        self._head_reads = 0  # bytes of later reads that the head spans (a lower bound)
        self._in_head = False
        self._messages = 0

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._state is not State.OPEN:
            return
        head_before = self._messages if self._in_head else -1
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A completed request asked to switch protocols: it is answered in HTTP/1.1,
            # and the connection ends, since what follows is not HTTP/1.1.
            self._queue.append(Refused(0, ""))
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if not isinstance(refused, Refused):  # a bug of ours, not bad input
                log.error("control request failed in the parser", exc_info=refused)
                refused = Refused(500, "internal error")
            self._queue.append(refused)
        except httptools.HttpParserError as exc:
            self._queue.append(Refused(400, f"malformed request: {_reason(exc)}"))
        else:
            # A head still incomplete after a read that it began before: all of that
            # read belongs to it. (Exact for a head trickled in; the callbacks count
            # the head of a request that arrives whole.)
            if self._in_head and head_before == self._messages:
                self._head_reads += len(data)
                if self._head_reads > self._max_head:
                    self._queue.append(self._head_too_large())
        self._run()

    def eof_received(self) -> bool:
        # A client may send its requests and shut its side: answer them, then close.
        self._eof = True
        if self._busy or self._queue:
            return True
        self._set_state(State.CLOSED)
        return False

    def pause_writing(self) -> None:
        # A client that pipelines without reading its answers: stop reading it too.
        self._paused = True
        if self._reading and self._transport is not None:
            self._reading = False
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if not self._reading and self._transport is not None and len(self._queue) < MAX_QUEUED:
            self._reading = True
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._queue.clear()
        if self._state is not State.CLOSED:
            self._set_state(State.CLOSED)

    def _set_state(self, state: State) -> None:
        if state not in _TRANSITIONS[self._state]:
            raise RuntimeError(f"control connection cannot switch from {self._state} to {state}")
        self._state = state

    # -- llhttp callbacks (collect only; nothing runs inside the parser)

    def on_message_begin(self) -> None:
        self._messages += 1
        self._in_head = True
        self._url = []
        self._content_type = b""
        self._expect = b""
        self._content_length = -1
        self._chunked = False
        self._body = []
        self._body_size = 0
        self._head_size = 0
        self._head_reads = 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._head_size += len(url)
        if self._head_size > self._max_head:
            raise self._head_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 3  # ":" and CRLF at least
        if self._head_size > self._max_head:
            raise self._head_too_large()
        name = name.lower()
        if name == b"content-type":
            self._content_type = value
        elif name == b"content-length":
            self._content_length = int(value)  # llhttp has checked it
        elif name == b"transfer-encoding":
            self._chunked = True
        elif name == b"expect":
            self._expect = value

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._content_length > self._max_body:
            raise self._body_too_large()
        if self._expect:
            if self._expect.lower() != b"100-continue":
                raise Refused(417, f"unsupported Expect: {self._expect[:80].decode('latin-1')}")
            if self._parser.get_http_version() == "1.1" and (
                self._content_length > 0 or self._chunked
            ):
                self._queue.append(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            raise self._body_too_large()
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        url = self._url
        body = self._body
        if not parser.should_keep_alive():
            connection = _CLOSE
        elif parser.get_http_version() == "1.1":
            connection = _KEEP
        else:
            connection = _KEEP_10
        self._queue.append(
            Request(
                parser.get_method().decode("ascii"),
                (url[0] if len(url) == 1 else b"".join(url)).decode("latin-1"),
                self._content_type.decode("latin-1"),
                body[0] if len(body) == 1 else b"".join(body),
                connection,
            )
        )
        self._body = []

    def _head_too_large(self) -> Refused:
        return Refused(431, f"request head larger than {self._max_head} bytes")

    def _body_too_large(self) -> Refused:
        return Refused(
            413, f"request body larger than {self._max_body} bytes (control.max_body_bytes)"
        )

    # -- answering, in order

    def _run(self) -> None:
        """Answer what is queued, in order, until an answer must be awaited; one write."""
        queue = self._queue
        out = self._out
        while queue and not self._busy and self._state is State.OPEN:
            item = queue.popleft()
            if type(item) is Request:
                reply = self._api.handle(item.method, item.target, item.content_type, item.body)
                if isinstance(reply, Answer):
                    self._answer(item, reply)
                else:
                    self._await(item, reply)
            elif type(item) is bytes:
                out.append(item)
            else:
                self._refuse(cast(Refused, item))
        self._flush()
        reading = len(queue) < MAX_QUEUED and not self._paused
        if reading is not self._reading and self._transport is not None:
            self._reading = reading
            if reading:
                self._transport.resume_reading()
            else:
                self._transport.pause_reading()

    def _answer(self, request: Request, answer: Answer) -> None:
        self._out.append(render(answer, request.connection, request.head_only))
        if request.connection == _CLOSE:
            self._set_state(State.CLOSING)

    def _await(self, request: Request, reply: Awaitable[Answer]) -> None:
        self._busy = True
        task = asyncio.ensure_future(reply)
        task.add_done_callback(lambda done: self._answered(request, done))

    def _answered(self, request: Request, task: asyncio.Future[Answer]) -> None:
        self._busy = False
        if self._state is not State.OPEN or task.cancelled():
            return
        try:
            answer = task.result()
        except Exception as exc:
            log.exception("control request %s %s failed", request.method, request.target[:200])
            answer = error(500, f"internal error: {exc}")
        self._answer(request, answer)
        self._run()

    def _refuse(self, refused: Refused) -> None:
        if refused.status:
            log.debug("control request refused: %d %s", refused.status, refused)
            self._out.append(render(error(refused.status, str(refused)), _CLOSE))
        self._set_state(State.CLOSING)

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        out = self._out
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if self._state is State.CLOSING or (self._eof and not self._busy and not self._queue):
            self._queue.clear()
            transport.close()  # after what is buffered has been written


def _reason(exc: httptools.HttpParserError) -> str:
    # llhttp's reasons are short and precise ("Transfer-Encoding can't be present with
    # Content-Length", "Invalid header value char"); keep them, bounded.
    return (str(exc) or type(exc).__name__)[:200]
