"""Retention of published frames for resuming clients, sans-IO.

Each channel (a topic, a user's notifications, the broadcasts) has a ring of the
frames published to it, oldest first. Rings are bounded three ways: a count per ring,
an age, and a byte budget over all rings together. A ring remembers the highest seq
it has let go (`evicted_max`): a client whose Last-Event-ID is below it has missed
something and must be told so, instead of silently skipping ahead.

One global deque holds every retained entry in seq order, so age and budget eviction
pop from its left without scanning channels.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .sse import Frame


class Entry:
    __slots__ = ("dead", "frame", "ring", "seq", "size", "topic", "ts")

    def __init__(self, seq: int, frame: Frame, ts: float, ring: Ring, topic: str | None) -> None:
        self.seq = seq
        self.frame = frame
        self.ts = ts
        self.ring = ring
        # Set for an event sent to one user on one topic: replayed only to that
        # user's connections that subscribe to the topic (fanout.route).
        self.topic = topic
        # Both framings are held: that is what the byte budget counts.
        self.size = len(frame.raw) + len(frame.chunked)
        self.dead = False


def latest_cost(entry: Entry) -> int:
    """What a latest value holds: its entry (also when the ring let it go) and the
    copy without its id line that new subscribers get (Ring.snapshot)."""
    return entry.size + len(entry.frame.raw)


class Ring:
    __slots__ = ("entries", "evicted_max", "key", "latest", "latest_snapshot")

    def __init__(self, key: tuple[str, str], evicted_max: int = 0) -> None:
        self.key = key
        self.entries: deque[Entry] = deque()
        self.evicted_max = evicted_max
        # Latest-value topics keep their last event past the ring's bounds.
        self.latest: Entry | None = None
        self.latest_snapshot: Frame | None = None

    def since(self, seq: int) -> list[Entry]:
        """Entries after `seq`, oldest first (who may see them: fanout.route)."""
        out = []
        for entry in reversed(self.entries):
            if entry.seq <= seq:
                break
            out.append(entry)
        out.reverse()
        return out

    def oldest_seq(self) -> int | None:
        return self.entries[0].seq if self.entries else None

    def snapshot(self) -> Frame | None:
        """The latest event as a frame without its `id:` line.

        Sent to a new subscriber of a latest-value topic after its `connected` event:
        without an id it does not move the client's Last-Event-ID back behind events
        the client is already past.
        """
        if self.latest is None:
            return None
        if self.latest_snapshot is None:
            body = self.latest.frame.raw
            self.latest_snapshot = Frame(body[body.index(b"\n") + 1 :])
        return self.latest_snapshot


class Store:
    def __init__(
        self,
        max_events: int,
        max_age_s: float,
        max_bytes: int,
        on_emptied: Callable[[Ring], None],
    ) -> None:
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self._on_emptied = on_emptied
        self._order: deque[Entry] = deque()
        self.bytes = 0  # of ring entries
        self.latest_bytes = 0  # of latest values, counted in the same budget
        self.count = 0

    @property
    def over_budget(self) -> bool:
        return self.bytes + self.latest_bytes > self.max_bytes

    def set_latest(self, ring: Ring, entry: Entry | None) -> None:
        if ring.latest is not None:
            self.latest_bytes -= latest_cost(ring.latest)
        ring.latest = entry
        ring.latest_snapshot = None
        if entry is not None:
            self.latest_bytes += latest_cost(entry)

    def retain(self, ring: Ring, entry: Entry, keep_latest: bool) -> None:
        if keep_latest:
            self.set_latest(ring, entry)
        if self.max_events == 0 or entry.size > self.max_bytes:
            ring.evicted_max = entry.seq
            return
        ring.entries.append(entry)
        self._order.append(entry)
        self.bytes += entry.size
        self.count += 1
        if len(ring.entries) > self.max_events:
            self._evict(ring.entries[0])
        # Ring entries go first, oldest first; latest values only once no ring entry
        # is left (fanout.retention drops them, least recently updated first).
        while self.over_budget and self.count:
            self._evict_oldest()

    def expire(self, now: float) -> None:
        cutoff = now - self.max_age_s
        order = self._order
        while order and (order[0].dead or order[0].ts < cutoff):
            entry = order[0]
            if entry.dead:
                order.popleft()
            else:
                self._evict(entry)

    def _evict_oldest(self) -> None:
        while self._order[0].dead:
            self._order.popleft()
        self._evict(self._order[0])

    def _evict(self, entry: Entry) -> None:
        # An entry leaves its ring from the left (rings are in seq order and every
        # bound removes the oldest first); the global deque drops it lazily.
        ring = entry.ring
        popped = ring.entries.popleft()
        assert popped is entry
        entry.dead = True
        if self._order and self._order[0] is entry:
            self._order.popleft()
        ring.evicted_max = entry.seq
        self.bytes -= entry.size
        self.count -= 1
        if not ring.entries:
            self._on_emptied(ring)
