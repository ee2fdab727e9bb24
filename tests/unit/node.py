"""The single-process composition as the unit tests drive it: Core, LocalGate and
Publishing wired as fanout.server wires them, with a fake clock and explicit flushes."""

from __future__ import annotations

from collections.abc import Callable

from fanout.admission import Refusal, decide
from fanout.config import Config, Limits, Replay, Stream
from fanout.core import Core
from fanout.gates import LocalGate
from fanout.hub import Subscriber, Transport
from fanout.opening import Backfill, framed
from fanout.publishing import Publishing
from fanout.retention import Retention
from fanout.route import Delivery
from fanout.server import local_emit
from fanout.stats import Stats


class Refused(Exception):
    pass


class _Answer:
    def __init__(self) -> None:
        self.refusal: Refusal | None = None

    def admitted(self, refusal: Refusal | None, backfill: Backfill | None = None) -> None:
        self.refusal = refusal


class Node:
    def __init__(
        self,
        clock: Callable[[], float],
        limits: Limits | None = None,
        replay: Replay | None = None,
        stream: Stream | None = None,
    ) -> None:
        config = Config(
            limits=limits or Limits(), replay=replay or Replay(), stream=stream or Stream()
        )
        self.core = core = Core(
            config, epoch="e", conn_prefix="e", clock=clock, schedule_flush=lambda fn: None
        )
        self.hub = core.hub
        self.gate = LocalGate(core)
        self.publishing = Publishing(
            local_emit(core), lambda c: core.hub.subscriber(c) is not None, lambda: core.draining
        )

    # -- publishing, as the control API calls it ------------------------------------

    def publish(self, topic: str, event: str, payload: bytes, user: str | None = None) -> Delivery:
        out = self.publishing.publish_many([(topic, event, payload, user)])
        assert isinstance(out, list)
        return out[0]

    def broadcast(self, event: str, payload: bytes) -> Delivery:
        d = self.publishing.broadcast(event, payload)
        assert isinstance(d, Delivery)
        return d

    def notify(self, user: str, event: str, payload: bytes) -> Delivery:
        d = self.publishing.notify(user, event, payload)
        assert isinstance(d, Delivery)
        return d

    def send(self, conn: str, event: str, payload: bytes) -> Delivery | None:
        d = self.publishing.send(conn, event, payload)
        assert d is None or isinstance(d, Delivery)
        return d

    # -- connections, as the subscriber protocol drives them ------------------------

    def new_subscriber(
        self, transport: Transport, chunked: bool, user: str | None, topics: frozenset[str]
    ) -> Subscriber:
        return self.hub.new_subscriber(transport, chunked, user, topics)

    def open(self, sub: Subscriber, last_event_id: str | None) -> bytes:
        answer = _Answer()
        self.gate.ask(answer, sub, last_event_id)
        if answer.refusal is not None:
            raise Refused(answer.refusal)
        # As the subscriber protocol does with a socket that takes everything at once.
        opening = self.core.open(sub, last_event_id, None)
        out = []
        while True:
            out.append(framed(opening.bodies, sub.chunked))
            out += [frame.for_peer(sub.chunked) for frame in opening.frames]
            opening.bodies, opening.frames = [], []
            if not self.core.catch_up(sub, opening):
                out.append(framed(opening.bodies, sub.chunked))
                return b"".join(out)

    def close(self, sub: Subscriber) -> None:
        self.hub.close(sub)

    def refusal(self, user: str | None) -> Refusal | None:
        hub = self.hub
        return decide(hub.limits, self.core.draining, hub.connections, hub.of_user(user)).refusal

    def user_connections(self, user: str) -> int:
        return len(self.hub.of_user(user))

    def flush(self) -> None:
        self.hub.flush()

    def expire(self) -> None:
        self.core.expire()

    def shutdown(self) -> int:
        self.core.draining = True
        return self.hub.disconnect_all()

    def counts(self) -> dict[str, object]:
        return self.core.counts()

    @property
    def head(self) -> int:
        return self.core.ids.head

    @property
    def connections(self) -> int:
        return self.hub.connections

    @property
    def stats(self) -> Stats:
        return self.core.stats

    @property
    def retention(self) -> Retention:
        return self.core.retention

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.core.retention.store
