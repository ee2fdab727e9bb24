"""The one table of counters and gauges: /stats, /metrics and the supervisor's sums
all read it, so a counter added here is counted, summed and exported everywhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

# Counted where they happen (events in the process that encodes them, deliveries in
# the process that holds the sockets) and summed across workers.
COUNTERS: dict[str, str] = {
    "published": "Events accepted from publishers",
    "delivered": "Event frames written to subscriber sockets",
    "dropped_slow": "Subscribers disconnected for exceeding max_buffered_bytes",
    "evicted": "Connections closed by the evict-oldest per-user policy",
    "heartbeats": "Heartbeat comments written",
    "timeouts": "Connections closed for not completing their headers in time",
    "replays": "Resumes served from the replay rings",
    "replayed_events": "Events sent from the replay rings",
    "resets": "Resumes told that continuity was lost",
}
# Read off the running parts at snapshot time.
GAUGES: dict[str, str] = {
    "connections": "Open subscriber streams",
    "users": "Users with at least one open stream",
    "topics": "Topics with at least one subscriber",
    "retained_events": "Events held for replay",
    "retained_bytes": "Bytes of events held for replay",
}


class Stats:
    """Plain ints bumped in place on the hot path. The attributes are declared for the
    type checker; the check below keeps them the same set as COUNTERS."""

    __slots__ = ("refused", *COUNTERS)
    published: int
    delivered: int
    dropped_slow: int
    evicted: int
    heartbeats: int
    timeouts: int
    replays: int
    replayed_events: int
    resets: int

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.refused: Counter[int] = Counter()  # connections refused, by HTTP status

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {name: getattr(self, name) for name in COUNTERS}
        out["refused"] = {str(k): v for k, v in sorted(self.refused.items())}
        out["refused_total"] = sum(self.refused.values())
        return out


if set(Stats.__annotations__) != set(COUNTERS):  # pragma: no cover - a developer's slip
    raise RuntimeError("Stats attributes and COUNTERS differ")


def add_up(parts: Iterable[Mapping[str, Any]], names: Iterable[str]) -> dict[str, object]:
    """The sum of `names` and of `refused` over several /stats dicts (workers')."""
    parts = list(parts)
    out: dict[str, object] = {name: sum(p[name] for p in parts) for name in names}
    refused: Counter[str] = Counter()
    for part in parts:
        refused.update(part["refused"])
    out["refused"] = dict(sorted(refused.items()))
    out["refused_total"] = sum(refused.values())
    return out
