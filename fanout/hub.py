"""The hub: delivery only. Subscribers, their channels, the flush queue, the write loop.

A channel is a topic, a user (their notifications) or the broadcast channel, and
holds its subscribers' transports split by body framing, so the write loop never
branches per subscriber. Channels exist while they have subscribers; what is
retained for resuming clients lives in fanout.retention, ids in fanout.ids.

Deliveries are queued and flushed once per loop iteration (or per `flush_interval`):
consecutive frames for the same channel go out as one write per subscriber. The
queue is flushed in publish order, so every connection receives its events in id
order, which is what makes Last-Event-ID resumption exact.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Protocol

import orjson

from . import sse
from .config import Limits, Stream
from .route import ALL, Key, Route, keys_of
from .stats import Stats

log = logging.getLogger("fanout.hub")


class Transport(Protocol):
    def write(self, data: bytes, /) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...


class Subscriber:
    # Memory per idle connection is a target (2 KiB, transport included): the id is
    # computed when asked for, and the topics and channels are objects shared by
    # every connection with the same subscription (see Hub._view).
    __slots__ = (
        "active",
        "chunked",
        "last_write",
        "prefix",
        "serial",
        "topics",
        "transport",
        "user",
        "view",
    )

    def __init__(
        self,
        prefix: str,
        serial: int,
        transport: Transport,
        chunked: bool,
        user: str | None,
        topics: frozenset[str],
    ) -> None:
        self.prefix = prefix
        self.serial = serial  # connection order: evict-oldest picks the lowest
        self.transport = transport
        self.chunked = chunked
        self.user = user
        self.topics = topics
        self.view: View | None = None  # set when added to the hub
        self.last_write = 0.0  # writes aimed at this connection alone, or a few
        self.active = True

    @property
    def id(self) -> str:
        """The connection id, as sent in its `connected` event: `<prefix>.<serial>`."""
        return f"{self.prefix}.{self.serial}"

    @property
    def channels(self) -> tuple[Channel, ...]:
        return self.view.channels if self.view is not None else ()

    @property
    def keys(self) -> tuple[Key, ...]:
        if self.view is not None:
            return self.view.keys
        return tuple(keys_of(self.topics, self.user))

    def last_activity(self) -> float:
        """When an event was last written here: a heartbeat is due only after silence."""
        latest = self.last_write
        for channel in self.channels:
            if channel.last_write > latest:
                latest = channel.last_write
        return latest


class View:
    """A subscription shared by its connections: the same topics, the same user."""

    __slots__ = ("channels", "keys", "topics", "users")

    def __init__(self, topics: frozenset[str], channels: tuple[Channel, ...]) -> None:
        self.topics = topics
        self.channels = channels
        self.keys = tuple(channel.key for channel in channels)
        self.users = 0  # connections holding it


class Channel:
    __slots__ = ("chunked", "key", "last_write", "raw", "users")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.chunked: dict[Transport, Subscriber] = {}
        self.raw: dict[Transport, Subscriber] = {}
        self.last_write = 0.0
        self.users = 0  # views holding it

    def count(self) -> int:
        return len(self.chunked) + len(self.raw)

    def add(self, sub: Subscriber) -> None:
        (self.chunked if sub.chunked else self.raw)[sub.transport] = sub

    def discard(self, sub: Subscriber) -> None:
        (self.chunked if sub.chunked else self.raw).pop(sub.transport, None)

    def subscribers(self) -> list[Subscriber]:
        return [*self.chunked.values(), *self.raw.values()]


class Group:
    """Subscribers picked for one event (a user's connections on a topic, one connection)."""

    __slots__ = ("chunked", "raw", "subs")

    def __init__(self, subs: list[Subscriber]) -> None:
        self.subs = subs
        self.chunked: dict[Transport, Subscriber] = {s.transport: s for s in subs if s.chunked}
        self.raw: dict[Transport, Subscriber] = {s.transport: s for s in subs if not s.chunked}

    def count(self) -> int:
        return len(self.subs)

    def forget_closed(self) -> None:
        for subs in (self.chunked, self.raw):
            for transport in [t for t, s in subs.items() if not s.active]:
                del subs[transport]


Target = Channel | Group


class Hub:
    def __init__(
        self,
        *,
        limits: Limits,
        stream: Stream,
        clock: Callable[[], float],
        schedule_flush: Callable[[Callable[[], None]], object],
        stats: Stats,
        conn_prefix: str,
    ) -> None:
        self.stats = stats
        self.limits = limits  # read on each write: a SIGHUP replaces it
        self._stream = stream
        self._clock = clock
        self._schedule_flush = schedule_flush
        self._prefix = conn_prefix  # connection ids are unique per process
        self._channels: dict[Key, Channel] = {}
        self._subs: dict[int, Subscriber] = {}  # by serial
        # Admitted, opening still being written: in _subs, in no channel yet.
        self._catching_up: dict[int, Subscriber] = {}
        self._views: dict[tuple[frozenset[str], str | None], View] = {}
        self._serial = 0
        self._pending: list[tuple[sse.Frame, Target]] = []
        self._flush_scheduled = False

    # -- reading ------------------------------------------------------------

    @property
    def connections(self) -> int:
        return len(self._subs)

    def subscriber(self, connection_id: str) -> Subscriber | None:
        prefix, _, serial = connection_id.rpartition(".")
        if prefix != self._prefix or not (serial.isascii() and serial.isdigit()):
            return None
        return self._subs.get(int(serial))

    def of_user(self, user: str | None) -> Sequence[Subscriber]:
        """A user's connections, oldest first (those still opening included)."""
        if user is None:
            return ()
        channel = self._channels.get(("user", user))
        subs = channel.subscribers() if channel else []
        subs += [s for s in self._catching_up.values() if s.user == user]
        return sorted(subs, key=lambda s: s.serial)

    def count_for(self, route: Route) -> int:
        """How many of this hub's connections an event on `route` reaches."""
        if route.kind == "conn":
            return 1 if self.subscriber(route.key) is not None else 0
        channel = self._channels.get((route.kind, route.key))
        if channel is None:
            return 0
        if route.topic is None:
            return channel.count()
        return sum(1 for s in channel.subscribers() if route.reaches(s.topics, s.user))

    def counts(self) -> dict[str, int]:
        channels = self._channels
        return {
            "connections": len(self._subs),
            "users": sum(1 for kind, _ in channels if kind == "user"),
            "topics": sum(1 for kind, _ in channels if kind == "topic"),
        }

    # -- connections ----------------------------------------------------------

    def new_subscriber(
        self, transport: Transport, chunked: bool, user: str | None, topics: frozenset[str]
    ) -> Subscriber:
        self._serial += 1
        return Subscriber(self._prefix, self._serial, transport, chunked, user, topics)

    def add(self, sub: Subscriber, live: bool = True) -> None:
        """Register an admitted subscriber. Live, it receives what is delivered from
        now on; not live (its opening is still being written), it counts (caps,
        per-user limits, drain) but receives nothing until `go_live`."""
        view = self._view(sub.topics, sub.user)
        view.users += 1
        sub.topics = view.topics
        sub.view = view
        self._subs[sub.serial] = sub
        if live:
            self.go_live(sub)
        else:
            self._catching_up[sub.serial] = sub

    def go_live(self, sub: Subscriber) -> None:
        # Frames still queued were published before this connection went live: its
        # opening replays them from retention, and delivering them again would
        # duplicate them.
        self.flush()
        self._catching_up.pop(sub.serial, None)
        assert sub.view is not None
        for channel in sub.view.channels:
            channel.add(sub)

    def close(self, sub: Subscriber) -> None:
        """Unregister; idempotent (a dropped subscriber's transport reports later)."""
        if not sub.active:
            return
        sub.active = False
        if self._subs.pop(sub.serial, None) is None:
            return  # never added (refused, or gone while being admitted)
        self._catching_up.pop(sub.serial, None)
        key = (sub.topics, sub.user)
        view = self._views[key]
        view.users -= 1
        for channel in sub.channels:
            channel.discard(sub)
        if not view.users:
            del self._views[key]
            for channel in view.channels:
                channel.users -= 1
                if not channel.users:
                    del self._channels[channel.key]

    def _view(self, topics: frozenset[str], user: str | None) -> View:
        """The topics and channels of a subscription, one object for all its connections."""
        view = self._views.get((topics, user))
        if view is None:
            channels = []
            for key in keys_of(topics, user):
                channel = self._channels.get(key)
                if channel is None:
                    channel = self._channels[key] = Channel(key)
                channel.users += 1
                channels.append(channel)
            view = self._views[(topics, user)] = View(topics, tuple(channels))
        return view

    def evict(self, sub: Subscriber, reason: str) -> None:
        """Close with a final `evicted` event saying why (per-user evict-oldest)."""
        body = sse.encode_event(orjson.dumps({"reason": reason}), event="evicted")
        self.stats.evicted += 1
        log.info("evicted connection %s of user %r: %s", sub.id, sub.user, reason)
        self.finish(sub, body)

    def drop_slow(self, sub: Subscriber) -> None:
        if sub.transport.is_closing():
            self.close(sub)  # gone already: not a slow reader
            return
        self.stats.dropped_slow += 1
        log.debug("dropped slow subscriber %s (buffer over limit)", sub.id)
        self.close(sub)
        sub.transport.abort()

    def finish(self, sub: Subscriber, body: bytes) -> None:
        """End a stream with a last event (or retry hint), after what is queued."""
        self.flush()
        self.close(sub)
        transport = sub.transport
        if sub.chunked:
            transport.write(sse.chunk(body) + sse.LAST_CHUNK)
        else:
            transport.write(body)
        transport.close()

    def disconnect_all(self) -> int:
        """End every stream now with a jittered retry hint (clients resume): on
        shutdown, and when the id space is lost. Spread over
        shutdown_retry_spread_ms, thousands of reconnects do not land in one instant."""
        self.flush()
        subs = list(self._subs.values())
        base, spread = self._stream.retry_ms, self._stream.shutdown_retry_spread_ms
        for sub in subs:
            self.finish(sub, sse.encode_retry(base + random.randint(0, spread)))
        return len(subs)

    # -- delivering -----------------------------------------------------------

    def deliver(self, route: Route, frame: sse.Frame) -> int:
        """Queue a frame for the connections `route` reaches; returns how many."""
        kind = route.kind
        target: Target | None
        if kind == "conn":
            sub = self.subscriber(route.key)
            target = Group([sub]) if sub is not None else None
        elif kind == "user" and route.topic is not None:
            channel = self._channels.get(("user", route.key))
            target = None
            if channel is not None:
                picked = [s for s in channel.subscribers() if route.reaches(s.topics, s.user)]
                target = Group(picked) if picked else None
        else:
            target = self._channels.get((kind, route.key) if kind != "all" else ALL)
        if target is None:
            return 0
        sent = target.count()
        if sent:
            self._pending.append((frame, target))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._schedule_flush(self.flush)
        return sent

    def flush(self) -> None:
        pending = self._pending
        self._flush_scheduled = False
        if not pending:
            return
        self._pending = []
        i, n = 0, len(pending)
        while i < n:
            target = pending[i][1]
            j = i + 1
            while j < n and pending[j][1] is target:
                j += 1
            self._write(target, [frame for frame, _ in pending[i:j]])
            i = j

    def _write(self, target: Target, frames: list[sse.Frame]) -> None:
        now = self._clock()
        if isinstance(target, Group):
            # Picked at publish time: some may have closed before this flush.
            target.forget_closed()
            for sub in target.subs:
                sub.last_write = now  # an event is activity: no heartbeat due
        else:
            target.last_write = now
        written = 0
        if target.chunked:
            written += self._write_all(target.chunked, sse.join(frames, chunked=True))
        if target.raw:
            written += self._write_all(target.raw, sse.join(frames, chunked=False))
        self.stats.delivered += written * len(frames)

    def _write_all(self, subs: dict[Transport, Subscriber], data: bytes) -> int:
        # The hot loop: one buffer check and one write of a shared bytes object per
        # subscriber. A subscriber over its buffer limit is cut, never waited for.
        limit = self.limits.max_buffered_bytes
        total = len(subs)
        slow = None
        for transport in subs:
            # try is free in CPython 3.11+ until something raises.
            try:
                if transport.get_write_buffer_size() > limit:
                    if slow is None:
                        slow = []
                    slow.append(subs[transport])
                    continue
                transport.write(data)
            except RuntimeError:
                # Closed under us (the peer went, its connection_lost is queued):
                # one dead socket must not stop the write to everyone after it.
                if slow is None:
                    slow = []
                slow.append(subs[transport])
        if slow is None:
            return total
        for sub in slow:
            self.drop_slow(sub)
        return total - len(slow)
