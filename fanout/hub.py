"""The hub: channels, subscribers, users; publish = encode once, write many.

A channel is a topic, a user (their notifications) or the broadcast channel. It
holds its subscribers' transports, split by body framing so that the write loop
never branches per subscriber, and a replay ring.

Publishes are queued and flushed once per loop iteration (or per `flush_interval`):
consecutive frames for the same channel go out as one write per subscriber. The
queue is flushed in publish order, so every connection receives its events in id
order, which is what makes Last-Event-ID resumption exact.
"""

from __future__ import annotations

import fnmatch
import heapq
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec
import orjson

from . import sse
from .config import Limits, Replay, Stream
from .ids import IdProblem, format_id, parse_id
from .replay import Entry, Ring, Store
from .stats import Stats

log = logging.getLogger("fanout.hub")

# Pruned channels remember their last evicted seq so a client resuming on them is
# told when it missed something; past this many, only a floor is remembered.
MAX_TOMBSTONES = 65_536


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
        "channels",
        "chunked",
        "last_write",
        "prefix",
        "serial",
        "topics",
        "transport",
        "user",
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
        self.channels: tuple[Channel, ...] = ()
        self.last_write = 0.0  # writes aimed at this connection alone
        self.active = True

    @property
    def id(self) -> str:
        """The connection id, as sent in its `connected` event: `<prefix>.<serial>`."""
        return f"{self.prefix}.{self.serial}"

    def last_activity(self) -> float:
        """When an event was last written here: a heartbeat is due only after silence."""
        latest = self.last_write
        for channel in self.channels:
            if channel.last_write > latest:
                latest = channel.last_write
        return latest


class View:
    """A subscription shared by its connections: the same topics, the same user."""

    __slots__ = ("channels", "topics", "users")

    def __init__(self, topics: frozenset[str], channels: tuple[Channel, ...]) -> None:
        self.topics = topics
        self.channels = channels
        self.users = 0  # connections holding it


class Group:
    """Subscribers picked for one event (a user's connections on a topic, one connection)."""

    __slots__ = ("chunked", "last_write", "raw")

    def __init__(self, subs: list[Subscriber]) -> None:
        self.chunked: dict[Transport, Subscriber] = {s.transport: s for s in subs if s.chunked}
        self.raw: dict[Transport, Subscriber] = {s.transport: s for s in subs if not s.chunked}
        self.last_write = 0.0

    def count(self) -> int:
        return len(self.chunked) + len(self.raw)

    def forget_closed(self) -> None:
        for subs in (self.chunked, self.raw):
            for transport in [t for t, s in subs.items() if not s.active]:
                del subs[transport]


class Channel(Ring):
    __slots__ = ("chunked", "last_write", "raw")

    def __init__(self, key: tuple[str, str], evicted_max: int = 0) -> None:
        super().__init__(key, evicted_max)
        self.chunked: dict[Transport, Subscriber] = {}
        self.raw: dict[Transport, Subscriber] = {}
        self.last_write = 0.0

    def count(self) -> int:
        return len(self.chunked) + len(self.raw)

    def add(self, sub: Subscriber) -> None:
        (self.chunked if sub.chunked else self.raw)[sub.transport] = sub

    def discard(self, sub: Subscriber) -> None:
        (self.chunked if sub.chunked else self.raw).pop(sub.transport, None)

    def subscribers(self) -> list[Subscriber]:
        return [*self.chunked.values(), *self.raw.values()]

    def idle(self) -> bool:
        return not self.chunked and not self.raw and not self.entries and self.latest is None


Target = Channel | Group
# (seq, frame) of events read back from a shared stream, oldest first.
Backfill = list[tuple[int, sse.Frame]]


class RetainedEvent(msgspec.Struct, array_like=True):
    seq: int
    topic: str | None
    age_s: float
    raw: bytes
    chunked: bytes


class RingState(msgspec.Struct, array_like=True):
    kind: str
    key: str
    evicted_max: int
    entries: list[RetainedEvent]
    latest: RetainedEvent | None


class HubState(msgspec.Struct):
    """What a hub retains, to seed another one (a new worker) with the same replay."""

    head: int
    rings: list[RingState]
    tombstones: list[tuple[str, str, int]]
    forgotten_floor: int


@dataclass(frozen=True, slots=True)
class Route:
    """Where an event goes: a topic, a user (optionally on one topic), all, one connection."""

    kind: Literal["topic", "user", "all", "conn"]
    key: str  # topic name, user id, "" for all, connection id
    topic: str | None = None  # with kind "user": only that user's connections on it


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def refusal_for(limits: Limits, draining: bool, total: int, user_count: int) -> Refusal | None:
    """The admission rule, shared by a single hub and the workers' supervisor."""
    retry_after = (("Retry-After", str(limits.retry_after_s)),)
    if draining:
        return Refusal(503, "shutting down", retry_after)
    user_full = user_count >= limits.max_connections_per_user
    if user_full and limits.per_user_policy == "reject":
        return Refusal(
            429,
            f"too many connections for this user (at most {limits.max_connections_per_user})",
            retry_after,
        )
    # Evicting the user's oldest connection frees the slot the new one takes.
    if total >= limits.max_connections and not user_full:
        return Refusal(503, "server full", retry_after)
    return None


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    sent: int
    total: int


class Hub:
    def __init__(
        self,
        *,
        epoch: str,
        limits: Limits,
        stream: Stream,
        replay: Replay,
        clock: Callable[[], float],
        schedule_flush: Callable[[Callable[[], None]], object],
        stats: Stats | None = None,
        conn_prefix: str | None = None,
        own_admission: bool = True,
    ) -> None:
        self.epoch = epoch
        # Connection ids are unique per process: workers put their pid in them.
        self._conn_prefix = conn_prefix if conn_prefix is not None else epoch
        # False in a worker: the supervisor applies per-user limits across workers.
        self._own_admission = own_admission
        self.head = 0  # seq of the last event published
        self.stats = stats if stats is not None else Stats()
        self._clock = clock
        self._schedule_flush = schedule_flush
        self._limits = limits
        self._stream = stream
        self._latest_patterns = tuple(replay.latest_value_topics)
        self._latest_max_age_s = replay.latest_max_age_s
        self._max_latest = replay.max_latest_topics
        # Topics holding a latest value, least recently updated first.
        self._latest: OrderedDict[str, Channel] = OrderedDict()
        self._topics: dict[str, Channel] = {}
        self._users: dict[str, Channel] = {}
        self._all = Channel(("all", ""))
        self._subs: dict[int, Subscriber] = {}  # by serial
        self._views: dict[tuple[frozenset[str], str | None], View] = {}
        self._serial = 0
        self._pending: list[tuple[sse.Frame, Target]] = []
        self._flush_scheduled = False
        self._tombstones: dict[tuple[str, str], int] = {}
        self._forgotten_floor = 0
        self.draining = False
        # Called with every event this hub encodes (the supervisor forwards them to
        # its workers); None in a single process.
        self.on_event: Callable[[Route, int, sse.Frame], None] | None = None
        self.store = Store(
            replay.max_events_per_topic,
            replay.max_age_s,
            replay.max_bytes_total,
            self._on_ring_emptied,
        )
        self._retry = sse.encode_retry(stream.retry_ms)

    # -- reading ------------------------------------------------------------

    @property
    def max_buffered_bytes(self) -> int:
        return self._limits.max_buffered_bytes

    @property
    def connections(self) -> int:
        return len(self._subs)

    def count_for(self, route: Route) -> int:
        """How many of this hub's connections an event on `route` reaches."""
        if route.kind == "all":
            return len(self._subs)
        if route.kind == "conn":
            return 1 if self.subscriber(route.key) is not None else 0
        if route.kind == "topic":
            channel = self._topics.get(route.key)
            return channel.count() if channel else 0
        channel = self._users.get(route.key)
        if channel is None:
            return 0
        if route.topic is None:
            return channel.count()
        return sum(1 for s in channel.subscribers() if route.topic in s.topics)

    def user_connections(self, user: str) -> int:
        channel = self._users.get(user)
        return channel.count() if channel is not None else 0

    def counts(self) -> dict[str, Any]:
        return {
            "connections": len(self._subs),
            "users": sum(1 for ch in self._users.values() if ch.count()),
            "topics": sum(1 for ch in self._topics.values() if ch.count()),
            "topics_retained": len(self._topics),
            "retained_events": self.store.count,
            "retained_bytes": self.store.bytes,
            "last_id": format_id(self.epoch, self.head),
        }

    # -- connections ----------------------------------------------------------

    def refusal(self, user: str | None) -> Refusal | None:
        """Why a new connection for `user` cannot be admitted now, or None."""
        user_count = self.user_connections(user) if user is not None else 0
        return refusal_for(self._limits, self.draining, len(self._subs), user_count)

    def update_limits(self, limits: Limits) -> None:
        """Apply reloaded limits (SIGHUP). Open connections are kept even when a
        lower cap now counts them over it: the caps are checked on admission."""
        self._limits = limits

    def new_subscriber(
        self, transport: Transport, chunked: bool, user: str | None, topics: frozenset[str]
    ) -> Subscriber:
        self._serial += 1
        return Subscriber(self._conn_prefix, self._serial, transport, chunked, user, topics)

    def open(
        self, sub: Subscriber, last_event_id: str | None, backfill: Backfill | None = None
    ) -> bytes:
        """Register a subscriber; returns the first bytes of its stream (after the head).

        `backfill`: events after `last_event_id` that the rings no longer hold, read
        from a shared stream (the Redis backplane), oldest first.
        """
        # Frames still queued were published before this connection existed: they
        # are in the rings already, and delivering them again would duplicate them.
        self.flush()
        if sub.user is not None:
            user_channel = self._user(sub.user)
            limit = self._limits.max_connections_per_user
            while self._own_admission and user_channel.count() >= limit:
                oldest = min(user_channel.subscribers(), key=lambda s: s.serial)
                self.evict(oldest, "evicted: this user opened a newer connection")
        view = self._view(sub.topics, sub.user)
        view.users += 1
        sub.topics = view.topics
        sub.channels = view.channels
        for channel in view.channels:
            channel.add(sub)
        self._subs[sub.serial] = sub
        return self._opening(sub, last_event_id, backfill)

    def close(self, sub: Subscriber) -> None:
        """Unregister; idempotent (a dropped subscriber's transport reports later)."""
        if not sub.active:
            return
        sub.active = False
        del self._subs[sub.serial]
        key = (sub.topics, sub.user)
        view = self._views[key]
        view.users -= 1
        if not view.users:
            del self._views[key]
        for channel in sub.channels:
            channel.discard(sub)
            if channel.idle() and channel is not self._all:
                self._prune(channel)

    def subscriber(self, connection_id: str) -> Subscriber | None:
        prefix, _, serial = connection_id.rpartition(".")
        if prefix != self._conn_prefix or not (serial.isascii() and serial.isdigit()):
            return None
        return self._subs.get(int(serial))

    def _view(self, topics: frozenset[str], user: str | None) -> View:
        """The topics and channels of a subscription, one object for all its connections."""
        view = self._views.get((topics, user))
        if view is None:
            channels = [self._topic(t) for t in sorted(topics)]
            channels.append(self._all)
            if user is not None:
                channels.append(self._user(user))
            view = self._views[(topics, user)] = View(topics, tuple(channels))
        return view

    def evict(self, sub: Subscriber, reason: str) -> None:
        """Close with a final `evicted` event saying why (per-user evict-oldest)."""
        body = sse.encode_event(orjson.dumps({"reason": reason}), event="evicted")
        self.stats.evicted += 1
        log.info("evicted connection %s of user %r: %s", sub.id, sub.user, reason)
        self._finish(sub, body)

    def drop_slow(self, sub: Subscriber) -> None:
        if sub.transport.is_closing():
            self.close(sub)  # gone already: not a slow reader
            return
        self.stats.dropped_slow += 1
        log.debug("dropped slow subscriber %s (buffer over limit)", sub.id)
        self.close(sub)
        sub.transport.abort()

    def shutdown(self) -> int:
        """End every stream with a jittered `retry:` hint; returns how many were open."""
        self.draining = True
        # Spread over shutdown_retry_spread_ms, the reconnects of thousands of
        # clients do not all land on the next daemon in the same instant.
        return self.disconnect_all()

    def _finish(self, sub: Subscriber, body: bytes) -> None:
        self.close(sub)
        transport = sub.transport
        if sub.chunked:
            transport.write(sse.chunk(body) + sse.LAST_CHUNK)
        else:
            transport.write(body)
        transport.close()

    # -- publishing -----------------------------------------------------------

    def publish(self, topic: str, event: str, payload: bytes, user: str | None = None) -> Delivery:
        """Queue an event for a topic's subscribers (or one user's among them)."""
        route = Route("topic", topic) if user is None else Route("user", user, topic)
        return self._emit(route, event, payload)

    def publish_many(self, items: list[tuple[str, str, bytes, str | None]]) -> list[Delivery]:
        """(topic, event, payload, user) each; validated before, so all go out."""
        return [self.publish(topic, event, payload, user) for topic, event, payload, user in items]

    def broadcast(self, event: str, payload: bytes) -> Delivery:
        return self._emit(Route("all", ""), event, payload)

    def notify(self, user: str, event: str, payload: bytes) -> Delivery:
        return self._emit(Route("user", user), event, payload)

    def send(self, connection_id: str, event: str, payload: bytes) -> Delivery | None:
        """To one connection by the id of its `connected` event; not retained."""
        if self.subscriber(connection_id) is None:
            return None
        return self._emit(Route("conn", connection_id), event, payload)

    def frame(self, seq: int, event: str, payload: bytes) -> sse.Frame:
        """The frame of an event with id `seq` in this epoch: its one encoding."""
        return sse.Frame(sse.encode_event(payload, id=format_id(self.epoch, seq), event=event))

    def encode(self, event: str, payload: bytes) -> tuple[int, sse.Frame]:
        """Assign the next id and build the event's frame."""
        self.head += 1
        self.stats.published += 1
        return self.head, self.frame(self.head, event, payload)

    def emit_at(self, route: Route, seq: int, event: str, payload: bytes) -> Delivery:
        """Encode with an id assigned elsewhere (the backplane's stream), then deliver."""
        self.stats.published += 1
        return self._fan_out(route, seq, self.frame(seq, event, payload))

    def restart_epoch(self, epoch: str) -> None:
        """The shared stream was lost (Redis restarted empty): start a new id space.

        Every stream is ended with a retry hint; clients come back with ids from the
        old epoch and are told, with a reset, that continuity was lost.
        """
        self.disconnect_all()
        self.epoch = epoch
        self.head = 0
        self._pending = []
        self._topics.clear()
        self._users.clear()
        self._latest.clear()
        self._all = Channel(("all", ""))
        self._tombstones.clear()
        self._forgotten_floor = 0
        self.store = Store(
            self.store.max_events, self.store.max_age_s, self.store.max_bytes, self._on_ring_emptied
        )

    def mark_gap(self, upto: int) -> None:
        """Events up to `upto` may have been missed: resumes from before it get a reset,
        and connected clients are sent away to resume (and learn it)."""
        self._forgotten_floor = max(self._forgotten_floor, upto)
        for channel in [self._all, *self._topics.values(), *self._users.values()]:
            channel.evicted_max = max(channel.evicted_max, upto)
        self.head = max(self.head, upto)
        self.disconnect_all()

    def disconnect_all(self) -> int:
        """End every stream now with a jittered retry hint (clients resume)."""
        self.flush()
        subs = list(self._subs.values())
        base, spread = self._stream.retry_ms, self._stream.shutdown_retry_spread_ms
        for sub in subs:
            self._finish(sub, sse.encode_retry(base + random.randint(0, spread)))
        return len(subs)

    def _emit(self, route: Route, event: str, payload: bytes) -> Delivery:
        seq, frame = self.encode(event, payload)
        return self._fan_out(route, seq, frame)

    def _fan_out(self, route: Route, seq: int, frame: sse.Frame) -> Delivery:
        if self.on_event is not None:
            self.on_event(route, seq, frame)
        return self.ingest(route, seq, frame)

    def ingest(self, route: Route, seq: int, frame: sse.Frame, live: bool = True) -> Delivery:
        """Retain and deliver an encoded event (from `encode` here, or another process's).

        `live=False` only retains it: a new worker is seeded with what is retained.
        """
        if seq > self.head:
            self.head = seq
        event_id = format_id(self.epoch, seq)
        now = self._clock()
        kind = route.kind
        target: Target
        if kind == "conn":
            sub = self.subscriber(route.key)
            if sub is None or not live:
                return Delivery(event_id, 0, 0)
            sub.last_write = now
            return self._deliver_now(seq, frame, Group([sub]))
        if kind == "topic":
            channel = target = self._topic(route.key)
            keep_latest = self._is_latest_value(route.key)
            self.store.retain(channel, Entry(seq, frame, now, channel, None), keep_latest)
            if keep_latest:
                self._latest[route.key] = channel
                self._latest.move_to_end(route.key)
                self._bound_latest(now)
        elif kind == "all":
            channel = target = self._all
            self.store.retain(channel, Entry(seq, frame, now, channel, None), False)
        elif route.topic is None:
            channel = target = self._user(route.key)
            self.store.retain(channel, Entry(seq, frame, now, channel, None), False)
        else:
            # Retained in the user's ring, filtered by topic on replay: it must never
            # be replayed to someone else's connection on the same topic.
            channel = self._user(route.key)
            target = Group([s for s in channel.subscribers() if route.topic in s.topics])
            self.store.retain(channel, Entry(seq, frame, now, channel, route.topic), False)
        self._maybe_prune(channel)
        if not live:
            return Delivery(event_id, 0, 0)
        if kind != "topic" and route.topic is None:
            return self._deliver_now(seq, frame, target)
        sent = target.count()
        if sent:
            self._pending.append((frame, target))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._schedule_flush(self.flush)
        return Delivery(event_id, sent, sent)

    def _deliver_now(self, seq: int, frame: sse.Frame, target: Target) -> Delivery:
        # Written at once, after anything queued, so `sent` counts real writes
        # (subscribers cut for backpressure are not in it) and order is kept.
        self.flush()
        total = target.count()
        sent = self._write(target, [frame])
        return Delivery(format_id(self.epoch, seq), sent, total)

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

    def _write(self, target: Target, frames: list[sse.Frame]) -> int:
        if isinstance(target, Group):
            # Picked at publish time: some may have closed before this flush.
            target.forget_closed()
        target.last_write = self._clock()
        written = 0
        if target.chunked:
            written += self._write_all(target.chunked, sse.join(frames, chunked=True))
        if target.raw:
            written += self._write_all(target.raw, sse.join(frames, chunked=False))
        self.stats.delivered += written * len(frames)
        return written

    def _write_all(self, subs: dict[Transport, Subscriber], data: bytes) -> int:
        # The hot loop: one buffer check and one write of a shared bytes object per
        # subscriber. A subscriber over its buffer limit is cut, never waited for.
        limit = self._limits.max_buffered_bytes
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

    # -- replay ---------------------------------------------------------------

    def _opening(
        self, sub: Subscriber, last_event_id: str | None, backfill: Backfill | None
    ) -> bytes:
        frames: list[bytes] = [self._retry]
        since: int | None = None
        problem: str | None = None
        older: list[bytes] = []
        first_older = 0
        if last_event_id is not None:
            parsed = parse_id(last_event_id, self.epoch, self.head)
            if isinstance(parsed, IdProblem):
                problem, since = parsed.value, 0
            else:
                since = parsed
                if backfill:
                    # Events newer than our head come live once registered.
                    kept = [(seq, frame) for seq, frame in backfill if seq <= self.head]
                    if kept:
                        older = [frame.raw for _, frame in kept]
                        first_older, since = kept[0][0], kept[-1][0]
                if any(ch.evicted_max > since for ch in sub.channels):
                    problem = "stale"
        entries = self._since(sub, since) if since is not None else []
        if problem is not None:
            frames.append(self._reset_body(sub, last_event_id, problem))
        first = entries[0].seq - 1 if entries else self.head
        if older:
            first = first_older - 1
        frames.append(self._connected_body(sub, first))
        frames.extend(older)
        frames.extend(entry.frame.raw for entry in entries)
        if since is None:
            frames.extend(self._snapshots(sub))
        else:
            self.stats.replays += 1
            self.stats.replayed_events += len(entries) + len(older)
        if sub.chunked:
            return b"".join(sse.chunk(body) for body in frames)
        return b"".join(frames)

    def covers(self, sub: Subscriber, last_event_id: str) -> bool:
        """Whether the rings alone can resume `sub` from `last_event_id` (else: reset,
        or a backfill from a shared stream). Unusable ids count as covered: they get
        a reset whatever the stream holds."""
        parsed = parse_id(last_event_id, self.epoch, self.head)
        if isinstance(parsed, IdProblem):
            return True
        keys = [("topic", t) for t in sub.topics] + [("all", "")]
        if sub.user is not None:
            keys.append(("user", sub.user))
        for kind, name in keys:
            if kind == "all":
                channel: Channel | None = self._all
            else:
                channel = (self._topics if kind == "topic" else self._users).get(name)
            floor = (
                channel.evicted_max
                if channel
                else self._tombstones.get((kind, name), self._forgotten_floor)
            )
            if floor > parsed:
                return False
        return True

    def _since(self, sub: Subscriber, seq: int) -> list[Entry]:
        runs = [ch.since(seq, sub.topics) for ch in sub.channels if ch.entries]
        if len(runs) == 1:
            return runs[0]
        return list(heapq.merge(*runs, key=lambda e: e.seq))

    def _reset_body(self, sub: Subscriber, last_event_id: str | None, problem: str) -> bytes:
        self.stats.resets += 1
        oldest = [s for s in (ch.oldest_seq() for ch in sub.channels) if s is not None]
        data = {
            "reason": problem,
            "lastEventId": last_event_id,
            "oldestId": format_id(self.epoch, min(oldest)) if oldest else None,
            "message": _RESET_MESSAGES[problem],
        }
        return sse.encode_event(orjson.dumps(data), event="reset")

    def _connected_body(self, sub: Subscriber, position: int) -> bytes:
        # The id is the stream's position: a client that drops before any event
        # resumes from here rather than from nothing.
        data = {"connection": sub.id, "user": sub.user, "topics": sorted(sub.topics)}
        return sse.encode_event(
            orjson.dumps(data), id=format_id(self.epoch, position), event="connected"
        )

    def _snapshots(self, sub: Subscriber) -> list[bytes]:
        out = []
        for channel in sub.channels:
            if channel.key[0] == "topic" and self._is_latest_value(channel.key[1]):
                frame = channel.snapshot()
                if frame is not None:
                    out.append(frame.raw)
        return out

    def _is_latest_value(self, topic: str) -> bool:
        return any(fnmatch.fnmatchcase(topic, p) for p in self._latest_patterns)

    def expire(self) -> None:
        now = self._clock()
        self.store.expire(now)
        self._bound_latest(now)

    def _bound_latest(self, now: float) -> None:
        cutoff = now - self._latest_max_age_s
        latest = self._latest
        while latest:
            name, channel = next(iter(latest.items()))
            entry = channel.latest
            if entry is not None and entry.ts >= cutoff and len(latest) <= self._max_latest:
                return
            del latest[name]
            channel.latest = None
            channel.latest_snapshot = None
            self._maybe_prune(channel)

    # -- state transfer -------------------------------------------------------

    def export_state(self) -> HubState:
        now = self._clock()

        def retained(entry: Entry) -> RetainedEvent:
            frame = entry.frame
            return RetainedEvent(entry.seq, entry.topic, now - entry.ts, frame.raw, frame.chunked)

        rings = []
        for channel in [self._all, *self._topics.values(), *self._users.values()]:
            latest = channel.latest
            rings.append(
                RingState(
                    channel.key[0],
                    channel.key[1],
                    channel.evicted_max,
                    [retained(e) for e in channel.entries],
                    retained(latest) if latest is not None else None,
                )
            )
        tombstones = [(kind, key, seq) for (kind, key), seq in self._tombstones.items()]
        return HubState(self.head, rings, tombstones, self._forgotten_floor)

    def import_state(self, state: HubState) -> None:
        """Seed an empty hub; entries go through the same bounds as live ones."""
        now = self._clock()
        self.head = max(self.head, state.head)
        self._forgotten_floor = state.forgotten_floor
        self._tombstones = {(kind, key): seq for kind, key, seq in state.tombstones}
        merged: list[tuple[RetainedEvent, Channel]] = []
        latest_channels: list[Channel] = []
        for ring in state.rings:
            if ring.kind == "all":
                channel = self._all
            elif ring.kind == "topic":
                channel = self._topic(ring.key)
            else:
                channel = self._user(ring.key)
            channel.evicted_max = max(channel.evicted_max, ring.evicted_max)
            if ring.latest is not None:
                latest = ring.latest
                frame = sse.Frame.from_parts(latest.raw, latest.chunked)
                channel.latest = Entry(latest.seq, frame, now - latest.age_s, channel, None)
                if ring.kind == "topic":
                    latest_channels.append(channel)
            merged.extend((entry, channel) for entry in ring.entries)
        for channel in sorted(latest_channels, key=lambda ch: ch.latest.ts if ch.latest else 0):
            self._latest[channel.key[1]] = channel
        # The store's global order is by seq, as if they had been published here.
        merged.sort(key=lambda pair: pair[0].seq)
        for entry, channel in merged:
            frame = sse.Frame.from_parts(entry.raw, entry.chunked)
            self.store.retain(
                channel, Entry(entry.seq, frame, now - entry.age_s, channel, entry.topic), False
            )
        for channel in [*self._topics.values(), *self._users.values()]:
            self._maybe_prune(channel)

    # -- channel bookkeeping --------------------------------------------------

    def _topic(self, name: str) -> Channel:
        channel = self._topics.get(name)
        if channel is None:
            key = ("topic", name)
            channel = self._topics[name] = Channel(key, self._tombstone(key))
        return channel

    def _user(self, name: str) -> Channel:
        channel = self._users.get(name)
        if channel is None:
            key = ("user", name)
            channel = self._users[name] = Channel(key, self._tombstone(key))
        return channel

    def _tombstone(self, key: tuple[str, str]) -> int:
        return self._tombstones.pop(key, self._forgotten_floor)

    def _on_ring_emptied(self, ring: Ring) -> None:
        kind, name = ring.key
        channel = (self._topics if kind == "topic" else self._users).get(name)
        if channel is not None:
            self._maybe_prune(channel)

    def _maybe_prune(self, channel: Channel) -> None:
        if channel.idle() and channel is not self._all:
            self._prune(channel)

    def _prune(self, channel: Channel) -> None:
        kind, name = channel.key
        table = self._topics if kind == "topic" else self._users
        if table.get(name) is not channel:
            return
        del table[name]
        if channel.evicted_max:
            self._tombstones[channel.key] = channel.evicted_max
            if len(self._tombstones) > MAX_TOMBSTONES:
                oldest = next(iter(self._tombstones))
                self._forgotten_floor = max(self._forgotten_floor, self._tombstones.pop(oldest))


_RESET_MESSAGES = {
    "stale": "events after your Last-Event-ID are no longer retained; refetch your state",
    "other-epoch": "your Last-Event-ID is from before a restart of the daemon; refetch your state",
    "malformed": "your Last-Event-ID is not an id this daemon issued; refetch your state",
    "future": "your Last-Event-ID is ahead of this daemon; refetch your state",
}
