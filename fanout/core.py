"""A process that holds subscribers: the id space, retention and delivery, together.

The single process, every worker and a daemon on the backplane run one Core; they
differ only in where ids are assigned (`publish` here, or `ingest` of events given
ids elsewhere) and in how connections are admitted (fanout.gates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import sse
from .config import Config
from .hub import Hub, Subscriber
from .ids import Sequencer
from .opening import Backfill, Opening, covers, opening, reset_body
from .retention import Retention
from .route import Delivery, Route
from .stats import Stats


class Core:
    def __init__(
        self,
        config: Config,
        *,
        epoch: str,
        conn_prefix: str,
        clock: Callable[[], float],
        schedule_flush: Callable[[Callable[[], None]], object],
    ) -> None:
        self.stats = Stats()
        self.ids = Sequencer(epoch)
        self.retention = Retention(config.replay)
        self.hub = Hub(
            limits=config.limits,
            stream=config.stream,
            clock=clock,
            schedule_flush=schedule_flush,
            stats=self.stats,
            conn_prefix=conn_prefix,
        )
        self._clock = clock
        self._retry = sse.encode_retry(config.stream.retry_ms)
        self.draining = False

    def publish(self, route: Route, event: str, payload: bytes) -> Delivery:
        """Assign the next id here, then retain and deliver."""
        seq = self.ids.next()
        self.stats.published += 1
        event_id = self.ids.id(seq)
        frame = sse.Frame(sse.encode_event(payload, id=event_id, event=event))
        sent = self.ingest(route, seq, frame)
        return Delivery(event_id, sent, self.hub.connections)

    def ingest(self, route: Route, seq: int, frame: sse.Frame, live: bool = True) -> int:
        """Retain and deliver an event whose id was assigned elsewhere (or here).
        `live=False` only retains it (a stream's recent events loaded at start)."""
        self.ids.observe(seq)
        self.retention.retain(route, seq, frame, self._clock())
        return self.hub.deliver(route, frame) if live else 0

    def open(
        self, sub: Subscriber, last_event_id: str | None, backfill: Backfill | None
    ) -> Opening:
        """Register an admitted subscriber, not yet live: its opening is written
        first, as its socket drains (the subscriber protocol), then `catch_up`."""
        self.hub.add(sub, live=False)
        return opening(
            self.ids, self.retention, self.stats, self._retry, sub, last_event_id, backfill
        )

    def catch_up(self, sub: Subscriber, backlog: Opening) -> bool:
        """Its opening written: what was retained after `backlog.cursor` meanwhile goes
        into `backlog` (True: write it, then ask again); with nothing more, the
        subscriber goes live in the same step, so no event falls between (False).
        If the rings let go of events it had not been sent yet, it is told so."""
        hub = self.hub
        hub.flush()  # queued events are retained already: read them from there
        keys = sub.keys
        if not self.retention.covers(keys, backlog.cursor):
            self.stats.resets += 1
            body = reset_body(self.ids, self.retention, sub, self.ids.id(backlog.cursor), "stale")
            backlog.bodies.append(body)
            backlog.cursor = self.ids.head
            hub.go_live(sub)
            return False
        more = self.retention.since(keys, sub.topics, backlog.cursor)
        if more:
            backlog.frames += [entry.frame for entry in more]
            backlog.cursor = more[-1].seq
            return True
        hub.go_live(sub)
        return False

    def covers(self, sub: Subscriber, last_event_id: str) -> bool:
        return covers(self.ids, self.retention, sub.keys, last_event_id)

    def expire(self) -> None:
        self.retention.expire(self._clock())

    def new_epoch(self, epoch: str) -> None:
        """The id space was lost (a shared stream came back empty): every stream is
        sent away to resume, and learns with a reset that continuity was lost."""
        self.hub.disconnect_all()
        self.ids.restart(epoch)
        self.retention.clear()

    def gap(self, upto: int) -> None:
        """Events up to `upto` may have been missed: resumes from before it get a
        reset, and connected clients are sent away to resume (and learn it)."""
        self.retention.mark_gap(upto)
        self.ids.observe(upto)
        self.hub.disconnect_all()

    def counts(self) -> dict[str, Any]:
        return {
            **self.hub.counts(),
            **self.retention.counts(),
            "last_id": self.ids.id(self.ids.head),
        }
