"""The parts that put a daemon (single process or supervisor) on the Redis backplane:
the stream is read into a Sink, publishes are appended to it, and admission counts a
user's connections on every daemon (fanout.backplane does the talking to Redis)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .admission import EVICTED, decide
from .backplane import Backplane, Unavailable
from .core import Core
from .gates import Admittable
from .hub import Subscriber
from .ids import Sequencer
from .publishing import Emit, Events
from .route import Delivery, Route
from .sse import Frame

log = logging.getLogger("fanout.backplane")


async def start(backplane: Backplane) -> None:
    """First, in either composition: the epoch and the recent events come from Redis
    and must be in place before the first subscriber or publisher is let in."""
    from .daemon import StartupError

    try:
        await backplane.start()
    except Unavailable as exc:
        raise StartupError(str(exc)) from None


class CoreSink:
    """A daemon with subscribers of its own reads the stream into its Core."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.ids: Sequencer = core.ids

    def ingest(self, route: Route, seq: int, frame: Frame, live: bool) -> None:
        if live:
            self._core.stats.published += 1
        self._core.ingest(route, seq, frame, live)

    def new_epoch(self, epoch: str) -> None:
        self._core.new_epoch(epoch)

    def gap(self, upto: int) -> None:
        self._core.gap(upto)

    def evict(self, connection_id: str, reason: str) -> bool:
        sub = self._core.hub.subscriber(connection_id)
        if sub is None:
            return False
        self._core.hub.evict(sub, reason)
        return True


def stream_emit(bp: Backplane, count: Callable[[Route], int], total: Callable[[], int]) -> Emit:
    """Publishing is an append to the shared stream; the event reaches this daemon's
    subscribers, like every other daemon's, when it is read back."""

    async def emit(events: Events) -> list[Delivery]:
        ids = await bp.publish(events)
        return [Delivery(i, count(r), total()) for i, (r, _, _) in zip(ids, events, strict=True)]

    return emit


class BackplaneGate:
    """Admission for a single-process daemon on the backplane: the cap counted here,
    per-user limits counted in Redis (here only while Redis is unreachable), and a
    resume from the stream when the rings do not reach back."""

    def __init__(self, core: Core, backplane: Backplane) -> None:
        self._core = core
        self._bp = backplane
        self._tasks: set[asyncio.Task[None]] = set()

    def ask(self, proto: Admittable, sub: Subscriber, last_event_id: str | None) -> None:
        task = asyncio.ensure_future(self._decide(proto, sub, last_event_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _decide(self, proto: Admittable, sub: Subscriber, last_event_id: str | None) -> None:
        core, hub = self._core, self._core.hub
        # Connections being admitted (each awaits Redis) count against the cap too,
        # or a burst of them would all pass it. This one is among self._tasks.
        total = hub.connections + len(self._tasks) - 1
        refusal = decide(hub.limits, core.draining, total, []).refusal
        if refusal is None and sub.user is not None:
            try:
                refusal = (await self._bp.admit(sub.id, sub.user)).refusal
            except Unavailable:
                log.warning("backplane down: per-user limit counted on this daemon only")
                local = decide(hub.limits, core.draining, total, hub.of_user(sub.user))
                refusal = local.refusal
                if refusal is None:
                    for old in local.evict:
                        hub.evict(old, EVICTED)
        backfill = None
        if refusal is None and last_event_id is not None:
            backfill = await self._bp.resume(
                sub.topics, sub.user, last_event_id, lambda: core.covers(sub, last_event_id)
            )
        proto.admitted(refusal, backfill)

    def closed(self, sub: Subscriber) -> None:
        self._bp.release(sub.id)
