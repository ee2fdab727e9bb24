"""Counters, read by GET /stats and GET /metrics; plain ints bumped in place."""

from __future__ import annotations

from collections import Counter


class Stats:
    __slots__ = (
        "delivered",
        "dropped_slow",
        "evicted",
        "heartbeats",
        "published",
        "refused",
        "replayed_events",
        "replays",
        "resets",
        "timeouts",
    )

    def __init__(self) -> None:
        self.published = 0  # events accepted from publishers
        self.delivered = 0  # event frames handed to subscriber sockets
        self.dropped_slow = 0  # subscribers cut for exceeding max_buffered_bytes
        self.evicted = 0  # connections closed by the evict-oldest policy
        self.heartbeats = 0
        self.timeouts = 0  # connections closed for not sending headers in time
        self.replays = 0  # resumes served from the replay rings
        self.replayed_events = 0
        self.resets = 0  # resumes told that continuity was lost
        self.refused: Counter[int] = Counter()  # by HTTP status

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        out["refused"] = {str(k): v for k, v in sorted(self.refused.items())}
        out["refused_total"] = sum(self.refused.values())
        return out
