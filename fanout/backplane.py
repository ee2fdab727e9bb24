"""Several daemons, one event stream: the Redis Streams backplane.

A publish is an XADD to one capped stream; every daemon (its own publishes too) reads
the stream with XREAD and delivers what it reads, in stream order. The stream entry's
id becomes the event id everywhere (`ms * 1e6 + n` under an epoch kept in Redis), so
a client may resume on any daemon: from that daemon's rings, or from the stream when
the rings no longer reach back. Per-user connection counts live in Redis sorted sets
with expiry, refreshed by the daemons that hold the connections, so a dead daemon's
connections stop counting by themselves.

When Redis is unreachable, publishes fail with 503 instead of vanishing; streams
keep running; the reader reconnects with backoff. If events could have been missed
meanwhile (the stream was trimmed past our position, or Redis came back empty), the
connected clients are sent away to resume and are told, with a reset, what they
lost. Never a silent gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .admission import EVICTED, Decision, decide
from .config import Backplane as BackplaneConfig
from .config import Limits
from .control import ServiceUnavailable
from .ids import IdProblem, Sequencer
from .opening import Backfill
from .publishing import Events
from .route import Route
from .sse import Frame

log = logging.getLogger("fanout.backplane")

SEQ_PER_MS = 1_000_000
READ_BLOCK_MS = 2000
READ_COUNT = 1000
CATCH_UP_S = 2.0

# Per-user counting: drop expired members, add this one, return them all; the rule
# (fanout.admission) is applied to them in order of age. Members are
# "<created ms, zero-padded>:<connection id>", so sorting them sorts by age.
_ADMIT = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


class Sink(Protocol):
    """What the stream is read into: a daemon's Core, or the supervisor (which
    forwards to its workers)."""

    ids: Sequencer

    def ingest(self, route: Route, seq: int, frame: Frame, live: bool) -> None: ...
    def new_epoch(self, epoch: str) -> None: ...
    def gap(self, upto: int) -> None: ...
    def evict(self, connection_id: str, reason: str) -> bool:
        """End that connection if this daemon holds it; False if it does not."""
        ...


class Unavailable(ServiceUnavailable):
    """Redis cannot be reached: the request cannot be done safely now (503)."""


def seq_of(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, n = text.partition("-")
    return int(ms) * SEQ_PER_MS + int(n or 0)


def entry_id(seq: int) -> str:
    return f"{seq // SEQ_PER_MS}-{seq % SEQ_PER_MS}"


class Backplane:
    def __init__(self, config: BackplaneConfig, limits: Callable[[], Limits], sink: Sink) -> None:
        self.config = config
        # Read at each admission: a SIGHUP that changes [limits] applies here too.
        self._limits = limits
        self.sink = sink
        self.ids = sink.ids
        self.down = False
        # Any: redis-py types every reply as a union of str, bytes and None, which
        # would bury this module in casts; replies are bytes (decode_responses off).
        self._redis: Any = aioredis.Redis.from_url(
            config.redis,
            socket_connect_timeout=2,
            socket_timeout=(READ_BLOCK_MS / 1000) + 5,
            retry_on_timeout=False,
        )
        self._stream = config.stream
        self._epoch_key = f"{config.stream}:epoch"
        self._last = "0-0"
        self._reader: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._admit = self._redis.register_script(_ADMIT)
        self._members: dict[str, tuple[str, str]] = {}  # conn id -> (user key, member)
        self._advanced = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- start and stop ---------------------------------------------------------

    async def start(self) -> None:
        try:
            epoch = await self._epoch()
            await self._load_recent()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"cannot reach Redis at {self.config.redis}: {exc}") from None
        log.info("backplane: stream %s on %s, epoch %s", self._stream, self.config.redis, epoch)
        self._reader = asyncio.create_task(self._read_forever())
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        for task in (self._reader, self._refresher, *self._tasks):
            if task is not None:
                task.cancel()
        await self._redis.aclose()

    async def _epoch(self) -> str:
        # The first daemon names the epoch; Redis losing its data loses the key too,
        # and the next daemon to look names a new one.
        candidate = format(time.time_ns() // 1_000_000, "x") + uuid.uuid4().hex[:4]
        await self._redis.set(self._epoch_key, candidate, nx=True)
        value = await self._redis.get(self._epoch_key)
        epoch = value.decode() if value else candidate
        if epoch != self.ids.epoch:
            self.sink.new_epoch(epoch)
        return epoch

    async def _load_recent(self) -> None:
        """Fill the rings with the stream's newest entries, so resumes work at once."""
        count = self.config.load_on_start
        entries = await self._redis.xrevrange(self._stream, count=count) if count else []
        entries.reverse()
        for entry_id_, fields in entries:
            self._deliver(entry_id_, fields, live=False)
        info = await self._stream_info()
        first_loaded = seq_of(entries[0][0]) if entries else None
        last = info.get("last-generated-id") if info else None
        if entries:
            self._last = entries[-1][0].decode()
        elif last:
            self._last = last.decode() if isinstance(last, bytes) else str(last)
        # Whatever the stream held before the loaded part, or ever held if nothing
        # was loaded (trimmed, or load_on_start = 0), is not in our rings: resumes
        # from before it are served from the stream, which knows what it trimmed.
        floor = first_loaded - 1 if first_loaded is not None else seq_of(self._last)
        if floor > 0:
            self.sink.gap(floor)
        self.ids.observe(seq_of(self._last))

    async def _stream_info(self) -> dict[str, Any]:
        try:
            raw = await self._redis.xinfo_stream(self._stream)
        except RedisError as exc:
            if "no such key" in str(exc).lower():
                return {}
            raise
        return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}

    # -- reading --------------------------------------------------------------

    async def _read_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                if self.down:
                    await self._recover()
                response = await self._redis.xread(
                    {self._stream: self._last}, block=READ_BLOCK_MS, count=READ_COUNT
                )
                backoff = 0.1
            except (RedisError, OSError) as exc:
                if not self.down:
                    log.warning("backplane: Redis unreachable (%s); retrying", exc)
                    self.down = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for _, entries in response or ():
                for entry_id_, fields in entries:
                    try:
                        self._deliver(entry_id_, fields, live=True)
                    except Exception:
                        # One bad entry (another version's, say) must not stop the reader.
                        log.exception("backplane: cannot deliver entry %r", entry_id_)
                    self._last = entry_id_.decode()
            self._advanced.set()
            self._advanced = asyncio.Event()

    async def _recover(self) -> None:
        """Back after an outage: check that nothing we should have read is gone."""
        value = await self._redis.get(self._epoch_key)
        if value is None or value.decode() != self.ids.epoch:
            log.warning("backplane: Redis lost the stream; starting a new epoch")
            self._last = "0-0"
            await self._epoch()
        else:
            info = await self._stream_info()
            deleted = info.get("max-deleted-entry-id")
            if deleted and seq_of(deleted) > seq_of(self._last):
                log.warning("backplane: events were trimmed before we read them")
                self.sink.gap(seq_of(deleted))
                self._last = deleted.decode() if isinstance(deleted, bytes) else str(deleted)
        self.down = False
        log.info("backplane: Redis reachable again")

    def _deliver(self, entry_id_: bytes, fields: dict[bytes, bytes], live: bool) -> None:
        seq = seq_of(entry_id_)
        kind = fields[b"k"].decode()
        key = fields[b"key"].decode()
        if kind == "evict":
            if live:
                self.sink.evict(key, fields[b"d"].decode())
            return
        topic = fields[b"t"].decode() or None
        route = Route(kind, key, topic)  # type: ignore[arg-type]
        frame = self.ids.frame(seq, fields[b"e"].decode(), fields[b"d"])
        self.sink.ingest(route, seq, frame, live)

    # -- publishing -----------------------------------------------------------

    async def publish(self, entries: Events) -> list[str]:
        """XADD all of them, atomically (MULTI/EXEC): all or none. Returns event ids."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for route, event, payload in entries:
                    pipe.xadd(
                        self._stream,
                        {
                            "k": route.kind,
                            "key": route.key,
                            "t": route.topic or "",
                            "e": event,
                            "d": payload,
                        },
                        maxlen=self.config.max_len,
                        approximate=True,
                    )
                ids = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"backplane unavailable, nothing was published: {exc}") from None
        return [self.ids.id(seq_of(i)) for i in ids]

    # -- per-user limits --------------------------------------------------------

    def _user_key(self, user: str) -> str:
        return f"{self._stream}:user:{user}"

    async def admit(self, connection_id: str, user: str) -> Decision[str]:
        """Count a connection for its user across daemons; the verdict is the same rule
        as everywhere (fanout.admission), over the user's connections on every daemon
        that came before this one. Evicted ones are ended (here or where they are)."""
        now = int(time.time() * 1000)
        ttl_ms = int(self.config.user_ttl_s * 1000)
        key = self._user_key(user)
        member = f"{now:015d}:{connection_id}"
        try:
            members = await self._admit(keys=[key], args=[now, now + ttl_ms, member, ttl_ms])
            ordered = sorted(m.decode() for m in members)
            older = ordered[: ordered.index(member)] if member in ordered else ordered
            decision = decide(self._limits(), False, 0, older)
            gone = [member] if decision.refusal is not None else decision.evict
            if gone:
                await self._redis.zrem(key, *gone)
        except (RedisError, OSError) as exc:
            raise Unavailable(str(exc)) from None
        if decision.refusal is not None:
            return Decision(decision.refusal)
        self._members[connection_id] = (key, member)
        evicted = [m.split(":", 1)[1] for m in decision.evict]
        for conn in evicted:
            await self.evict(conn, EVICTED)
        return Decision(None, evicted)

    async def evict(self, connection_id: str, reason: str) -> None:
        if self.sink.evict(connection_id, reason):
            return
        fields = {"k": "evict", "key": connection_id, "t": "", "e": "", "d": reason}
        try:
            await self._redis.xadd(
                self._stream, fields, maxlen=self.config.max_len, approximate=True
            )
        except (RedisError, OSError) as exc:
            log.warning("backplane: cannot ask another daemon to evict %s: %s", connection_id, exc)

    def release(self, connection_id: str) -> None:
        held = self._members.pop(connection_id, None)
        if held is not None:
            self._spawn(self._redis.zrem(held[0], held[1]))

    async def _refresh_forever(self) -> None:
        interval = self.config.user_ttl_s / 3
        while True:
            await asyncio.sleep(interval)
            if not self._members:
                continue
            expiry = int((time.time() + self.config.user_ttl_s) * 1000)
            ttl_ms = int(self.config.user_ttl_s * 1000)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, member in self._members.values():
                        pipe.zadd(key, {member: expiry}, xx=True)
                        pipe.pexpire(key, ttl_ms)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.debug("backplane: refresh of user counts failed: %s", exc)

    # -- resuming from the stream ---------------------------------------------------

    async def caught_up(self, last_event_id: str) -> None:
        """A client may resume here with an id another daemon gave it before we read
        that far: wait (briefly) until we have."""
        deadline = asyncio.get_running_loop().time() + CATCH_UP_S
        while True:
            if self.ids.parse(last_event_id) is not IdProblem.FUTURE:
                return
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._advanced.wait(), remaining)
            except TimeoutError:
                return

    async def backfill(
        self, topics: frozenset[str], user: str | None, last_event_id: str
    ) -> Backfill | None:
        """Events after `last_event_id` for that subscription, from the stream; None if
        the stream no longer reaches back that far either (the client gets a reset)."""
        parsed = self.ids.parse(last_event_id)
        if isinstance(parsed, IdProblem):
            return None
        try:
            info = await self._stream_info()
            deleted = info.get("max-deleted-entry-id")
            if deleted and seq_of(deleted) > parsed:
                return None
            entries = await self._redis.xrange(
                self._stream, min=f"({entry_id(parsed)}", count=self.config.max_len
            )
        except (RedisError, OSError):
            return None
        out: Backfill = []
        for raw_id, fields in entries:
            kind = fields[b"k"].decode()
            if kind == "evict":
                continue
            route = Route(kind, fields[b"key"].decode(), fields[b"t"].decode() or None)
            # Never one connection's events: those are not replayed, like the rings.
            if route.kind != "conn" and route.reaches(topics, user):
                seq = seq_of(raw_id)
                out.append((seq, self.ids.frame(seq, fields[b"e"].decode(), fields[b"d"])))
        return out

    async def resume(
        self,
        topics: frozenset[str],
        user: str | None,
        last_event_id: str,
        covered: Callable[[], bool],
    ) -> Backfill | None:
        """Wait until we have read as far as the client's id, then a backfill from the
        stream if our rings (`covered`) do not reach back to it."""
        await self.caught_up(last_event_id)
        if covered():
            return None
        return await self.backfill(topics, user, last_event_id)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("backplane: background call failed: %s", task.exception())
