"""How a connection is admitted, one per composition; the rule is fanout.admission.

The subscriber protocol has one path: it asks its gate, and the gate answers with
`admitted(refusal, backfill)`, at once (a single process) or later (a worker asks
its supervisor; a daemon on the backplane asks Redis).
"""

from __future__ import annotations

from typing import Protocol

from .admission import EVICTED, Refusal, decide
from .core import Core
from .hub import Subscriber
from .opening import Backfill


class Admittable(Protocol):
    def admitted(self, refusal: Refusal | None, backfill: Backfill | None = None) -> None: ...


class Gate(Protocol):
    def ask(self, proto: Admittable, sub: Subscriber, last_event_id: str | None) -> None:
        """Decide, then call `proto.admitted` (now or later)."""

    def closed(self, sub: Subscriber) -> None:
        """An admitted connection has gone."""


class LocalGate:
    """A single process counts its own connections."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def ask(self, proto: Admittable, sub: Subscriber, last_event_id: str | None) -> None:
        core = self._core
        hub = core.hub
        decision = decide(hub.limits, core.draining, hub.connections, hub.of_user(sub.user))
        if decision.refusal is None:
            for old in decision.evict:
                hub.evict(old, EVICTED)
        proto.admitted(decision.refusal)

    def closed(self, sub: Subscriber) -> None:
        pass
