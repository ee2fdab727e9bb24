"""The subscriber's asyncio Protocol: callbacks in, calls on the hub and the wheel out.

h11 reads the request; after the response head the connection is a byte sink that
the hub writes shared frames to. The parser is dropped then, so an idle stream costs
this object, its Subscriber and the transport, nothing more.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import h11

from . import sse
from .admission import Refusal
from .core import Core
from .gates import Gate
from .hub import Subscriber
from .ipguard import IpGuard
from .opening import Backfill, Opening, framed
from .pages import Pages
from .subscribe import Answer, Identity, Page, Reject, Subscribe, parse, response, stream_head
from .wheel import Timer, Wheel

log = logging.getLogger("fanout.subscriber")

# The opening is written up to this much buffered at a time (or half of
# limits.max_buffered_bytes if smaller), then continued as the socket drains.
OPENING_HIGH_WATER = 64 * 1024


class State(enum.Enum):
    READING_REQUEST = "reading request"
    ADMITTING = "admitting"  # waiting for the gate's verdict
    STREAMING = "streaming"
    MUST_CLOSE = "must close"  # an answer was sent; waiting for the transport to go
    CLOSED = "closed"


_TRANSITIONS = {
    State.READING_REQUEST: {State.ADMITTING, State.MUST_CLOSE, State.CLOSED},
    State.ADMITTING: {State.STREAMING, State.MUST_CLOSE, State.CLOSED},
    State.STREAMING: {State.CLOSED},
    State.MUST_CLOSE: {State.CLOSED},
    State.CLOSED: set(),
}


class IllegalTransition(RuntimeError):
    pass


@dataclass(slots=True)
class Shared:
    """What every subscriber protocol shares, passed through the factory."""

    core: Core
    gate: Gate
    wheel: Wheel[TimerTarget]
    clock: Callable[[], float]
    max_header_bytes: int
    header_timeout_s: float
    heartbeat_interval_s: float
    max_topics: int
    send_buffer_bytes: int
    # Every open connection, so a drain can close the ones still sending headers
    # and abort the ones that stopped reading; `all_closed` is set during a drain.
    connections: set[SubscriberProtocol]
    # Every connection holding a descriptor counts against this (streams, pages,
    # requests still being read): fanout.daemon.descriptor_cap.
    max_open: int
    ipguard: IpGuard
    retry_after_s: int
    # Streams whose opening is still being written (few at a time; none when idle).
    openings: dict[SubscriberProtocol, Opening] = field(default_factory=dict)
    all_closed: asyncio.Event | None = None
    # /fanout.js and the demo: answered whole, then the connection closes.
    pages: Pages = field(default_factory=Pages)


class TimerTarget:
    __slots__ = ()

    def on_timer(self, now: float) -> None:
        raise NotImplementedError


class SubscriberProtocol(asyncio.Protocol, TimerTarget):
    __slots__ = (
        "_identity",
        "_ip",
        "_parser",
        "_received",
        "_request",
        "_shared",
        "_state",
        "_sub",
        "_timer",
        "_transport",
    )

    def __init__(self, shared: Shared, identity: Identity) -> None:
        self._shared = shared
        self._identity = identity
        self._state = State.READING_REQUEST
        self._parser: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=shared.max_header_bytes
        )
        self._transport: asyncio.Transport | None = None
        self._sub: Subscriber | None = None
        self._timer: Timer[TimerTarget] | None = None
        # h11 bounds only an incomplete head; a large head that arrives in one read
        # would pass, so the bytes before the request completes are counted here.
        self._received = 0
        self._request: Subscribe | None = None  # while ADMITTING
        self._ip: str | None = None  # counted by the IpGuard

    def _set_state(self, new: State) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise IllegalTransition(f"cannot switch from {self._state.value} to {new.value}")
        self._state = new

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        shared = self._shared
        full = len(shared.connections) >= shared.max_open
        shared.connections.add(self)
        if full:
            self._turn_away(503, "server full")
            return
        guard = shared.ipguard
        if guard.enabled:
            key = guard.key(transport.get_extra_info("peername"))
            if key is not None:
                refused = guard.admit(key)
                if refused is not None:
                    self._turn_away(429, refused)
                    return
                self._ip = key
        if shared.send_buffer_bytes:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, shared.send_buffer_bytes)
        self._timer = shared.wheel.schedule(shared.clock() + shared.header_timeout_s, self)

    def data_received(self, data: bytes) -> None:
        if self._state is not State.READING_REQUEST or self._parser is None:
            return  # a streaming peer has nothing to say; ignore, keep nothing
        parser = self._parser
        self._received += len(data)
        if self._received > self._shared.max_header_bytes:
            self._refuse(431, "request headers too large")
            return
        try:
            parser.receive_data(data)
            event = parser.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            if status == 431:
                self._refuse(431, "request headers too large")
            else:
                # h11 hints 501 for a transfer coding it does not know: still the
                # client's fault, and a 5xx would read as ours (and page someone).
                self._refuse(status if status < 500 else 400, f"malformed request: {exc}")
            return
        if event is h11.NEED_DATA:
            return
        if isinstance(event, h11.Request):
            self._on_request(event)
        else:
            self._close_quietly()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        shared = self._shared
        shared.connections.discard(self)
        shared.openings.pop(self, None)
        if self._ip is not None:
            shared.ipguard.release(self._ip)
            self._ip = None
        if not shared.connections and shared.all_closed is not None:
            shared.all_closed.set()
        if self._timer is not None:
            shared.wheel.cancel(self._timer)
            self._timer = None
        if self._sub is not None and self._state is State.STREAMING:
            shared.core.hub.close(self._sub)
            shared.gate.closed(self._sub)
        if self._state is not State.CLOSED:
            self._set_state(State.CLOSED)
        self._parser = None

    # -- timers ---------------------------------------------------------------

    def on_timer(self, now: float) -> None:
        self._timer = None
        if self._state in (State.READING_REQUEST, State.ADMITTING):
            self._shared.core.stats.timeouts += 1
            log.info("closed %s: headers not complete in time", self._peer())
            self._close_quietly()
        elif self._state is State.MUST_CLOSE and self._transport is not None:
            # An answer (a refusal, a page) its peer has not read in time: cut it.
            self._transport.abort()
        elif self._state is State.STREAMING and self._sub is not None:
            if self._sub.active:
                self._heartbeat(now, self._sub)
            elif self._transport is not None:
                # Ended by the hub (evicted, epoch change) with its last bytes still
                # unread a heartbeat later: its peer stopped reading; let it go.
                self._transport.abort()

    def _heartbeat(self, now: float, sub: Subscriber) -> None:
        shared = self._shared
        interval = shared.heartbeat_interval_s
        quiet_since = sub.last_activity()
        # Any event written within the interval already kept proxies awake.
        if now - quiet_since >= interval:
            transport = sub.transport
            hub = shared.core.hub
            if transport.get_write_buffer_size() > hub.limits.max_buffered_bytes:
                hub.drop_slow(sub)
                return
            transport.write(sse.HEARTBEAT_FRAME.for_peer(sub.chunked))
            shared.core.stats.heartbeats += 1
            quiet_since = now
        self._timer = shared.wheel.schedule(quiet_since + interval, self)

    # -- request handling -----------------------------------------------------

    def _on_request(self, request: h11.Request) -> None:
        shared = self._shared
        result = parse(request, self._identity, shared.max_topics)
        if isinstance(result, Reject):
            self._refuse(result.status, result.reason, result.headers)
            return
        if isinstance(result, Page):
            self._answer_page(result)
            return
        if isinstance(result, Answer):  # a CORS preflight
            assert self._transport is not None
            self._transport.write(response(result.status, "", result.headers))
            self._close_quietly()
            return
        transport = self._transport
        assert transport is not None
        self._set_state(State.ADMITTING)
        self._request = result
        self._sub = shared.core.hub.new_subscriber(
            transport, result.chunked, result.user, result.topics
        )
        shared.gate.ask(self, self._sub, result.last_event_id)

    def admitted(self, refusal: Refusal | None, backfill: Backfill | None = None) -> None:
        """The gatekeeper's verdict on a connection in ADMITTING."""
        sub, request = self._sub, self._request
        assert sub is not None
        self._request = None
        if self._state is not State.ADMITTING or request is None:
            # Gone while waiting: give the slot it was granted back.
            if refusal is None:
                self._shared.gate.closed(sub)
            return
        if refusal is not None:
            self._refuse(refusal.status, refusal.reason, refusal.headers + request.headers)
            return
        self._stream(request, sub, backfill)

    def _stream(
        self, request: Subscribe, sub: Subscriber, backfill: Backfill | None = None
    ) -> None:
        shared = self._shared
        transport = self._transport
        assert transport is not None
        opening = shared.core.open(sub, request.last_event_id, backfill)
        transport.write(stream_head(request))
        self._sub = sub
        self._parser = None
        self._set_state(State.STREAMING)
        if self._timer is not None:
            shared.wheel.cancel(self._timer)
        # The first heartbeat of each connection lands at a random point of the
        # interval, so connections opened together do not beat together forever.
        first = shared.clock() + shared.heartbeat_interval_s * random.uniform(0.5, 1.0)
        self._timer = shared.wheel.schedule(first, self)
        # The opening is written as the socket drains (pause_writing/resume_writing),
        # never buffered whole: a client that does not read holds at most the high
        # water mark plus one frame, whatever is retained.
        limit = shared.core.hub.limits.max_buffered_bytes
        transport.set_write_buffer_limits(high=min(OPENING_HIGH_WATER, limit // 2))
        shared.openings[self] = opening
        self._pump()

    def _pump(self) -> None:
        """Write the opening while the transport takes it; then the subscriber is live."""
        shared = self._shared
        opening = shared.openings.get(self)
        sub, transport = self._sub, self._transport
        if opening is None or sub is None or transport is None:
            return
        chunked = sub.chunked
        while not opening.paused:
            if not sub.active or transport.is_closing():
                del shared.openings[self]  # ended meanwhile (drain, eviction, gone)
                return
            if opening.bodies:
                transport.write(framed(opening.bodies, chunked))
                opening.bodies = []
                continue
            if opening.frames:
                frames, i = opening.frames, 0
                while i < len(frames) and not opening.paused:
                    transport.write(frames[i].for_peer(chunked))
                    i += 1
                del frames[:i]
                continue
            if not shared.core.catch_up(sub, opening):
                if opening.bodies:  # told that continuity was lost, before any live event
                    transport.write(framed(opening.bodies, chunked))
                del shared.openings[self]
                return

    def pause_writing(self) -> None:
        opening = self._shared.openings.get(self)
        if opening is not None:
            opening.paused = True

    def resume_writing(self) -> None:
        opening = self._shared.openings.get(self)
        if opening is not None:
            opening.paused = False
            self._pump()

    def _answer_page(self, page: Page) -> None:
        assert self._transport is not None
        self._transport.write(self._shared.pages.answer(page))
        self._close_quietly()

    def _refuse(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._shared.core.stats.refused[status] += 1
        log.info("refused %s: %d %s", self._peer(), status, reason)
        assert self._transport is not None
        self._transport.write(response(status, reason, headers))
        self._close_quietly()

    def _turn_away(self, status: int, reason: str) -> None:
        """Refused before reading anything (server full, this address over its share):
        a short answer, counted, logged at debug only (a flood must not flood the log)."""
        shared = self._shared
        shared.core.stats.refused[status] += 1
        log.debug("turned away %s: %d %s", self._peer(), status, reason)
        headers = (("Retry-After", str(shared.retry_after_s)),)
        assert self._transport is not None
        self._transport.write(response(status, reason, headers))
        self._close_quietly()

    def _close_quietly(self) -> None:
        self._set_state(State.MUST_CLOSE)
        self._parser = None
        shared = self._shared
        if self._timer is not None:
            shared.wheel.cancel(self._timer)
        # The answer gets one header timeout to be read, then the connection is cut.
        self._timer = shared.wheel.schedule(shared.clock() + shared.header_timeout_s, self)
        if self._transport is not None:
            self._transport.close()

    def _peer(self) -> str:
        if self._transport is None:
            return "?"
        peer = self._transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            return f"{peer[0]}:{peer[1]}"
        return str(peer or "unix-socket peer")

    def close_if_reading(self) -> None:
        """On shutdown: a connection that has not finished its request is just closed."""
        if self._state in (State.READING_REQUEST, State.ADMITTING):
            self._close_quietly()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
