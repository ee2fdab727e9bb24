"""Retention, sans-IO: what a daemon keeps so that a client can resume.

Per channel (a topic, a user's notifications, the broadcasts) a ring of recent
frames, bounded by count, age and one byte budget (fanout.replay); latest values for
latest-value topics; tombstones of pruned rings, which remember how far they had let
go, so a resume from before that is told it missed something. Rings exist only while
they hold something: subscribers live in the hub, not here.

Export and restore carry all of it to another process (a new worker's seed).
"""

from __future__ import annotations

import fnmatch
import heapq
from collections import OrderedDict
from collections.abc import Sequence

import msgspec

from .config import Replay
from .replay import Entry, Ring, Store
from .route import ALL, Key, Route, entry_visible
from .sse import Frame

# Pruned rings remember their last evicted seq; past this many, only a floor is kept.
MAX_TOMBSTONES = 65_536
# Topic names seen by the latest-value pattern check, remembered to skip the fnmatch.
_MATCH_CACHE = 65_536


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


class RetainedState(msgspec.Struct):
    """Everything retained, with the id space's head (the worker link's Seed)."""

    head: int
    rings: list[RingState]
    tombstones: list[tuple[str, str, int]]
    forgotten_floor: int


class Retention:
    def __init__(self, replay: Replay) -> None:
        self._replay = replay
        self._patterns = tuple(replay.latest_value_topics)
        self._is_latest: dict[str, bool] = {}
        self._rings: dict[Key, Ring] = {}
        # Topics holding a latest value, least recently updated first.
        self._latest: OrderedDict[str, Ring] = OrderedDict()
        self._tombstones: dict[Key, int] = {}
        self._forgotten_floor = 0
        self.store = self._new_store()

    def _new_store(self) -> Store:
        r = self._replay
        return Store(r.max_events_per_topic, r.max_age_s, r.max_bytes_total, self._maybe_prune)

    # -- writing ----------------------------------------------------------------

    def retain(self, route: Route, seq: int, frame: Frame, now: float) -> None:
        key = route.channel
        if key is None:
            return  # for one connection: nobody else may ever replay it
        ring = self._ring(key)
        keep_latest = route.kind == "topic" and self.is_latest_value(route.key)
        # Sent to one user on one topic: replayed only to that user's connections on
        # the topic, never to someone else's (route.entry_visible).
        topic = route.topic if route.kind == "user" else None
        self.store.retain(ring, Entry(seq, frame, now, ring, topic), keep_latest)
        if keep_latest:
            self._latest[route.key] = ring
            self._latest.move_to_end(route.key)
        if keep_latest or self.store.over_budget:
            self._bound_latest(now)
        self._maybe_prune(ring)

    def expire(self, now: float) -> None:
        self.store.expire(now)
        self._bound_latest(now)

    def mark_gap(self, upto: int) -> None:
        """Events up to `upto` may have been missed: resumes from before it get a reset."""
        self._forgotten_floor = max(self._forgotten_floor, upto)
        for ring in self._rings.values():
            ring.evicted_max = max(ring.evicted_max, upto)
        for key, seq in self._tombstones.items():
            self._tombstones[key] = max(seq, upto)

    def clear(self) -> None:
        """A new id space: nothing retained applies to it."""
        self._rings.clear()
        self._latest.clear()
        self._tombstones.clear()
        self._forgotten_floor = 0
        self.store = self._new_store()

    # -- reading ----------------------------------------------------------------

    def is_latest_value(self, topic: str) -> bool:
        if not self._patterns:
            return False
        known = self._is_latest.get(topic)
        if known is None:
            if len(self._is_latest) >= _MATCH_CACHE:
                self._is_latest.clear()
            known = self._is_latest[topic] = any(
                fnmatch.fnmatchcase(topic, p) for p in self._patterns
            )
        return known

    def since(self, keys: Sequence[Key], topics: frozenset[str], seq: int) -> list[Entry]:
        """Entries after `seq` that a subscription on `keys` sees, in seq order."""
        runs = []
        for key in keys:
            ring = self._rings.get(key)
            if ring is not None and ring.entries:
                runs.append(
                    [e for e in ring.since(seq) if entry_visible(e.topic, topics)]
                    if key[0] == "user"
                    else ring.since(seq)
                )
        if len(runs) == 1:
            return runs[0]
        return list(heapq.merge(*runs, key=lambda e: e.seq))

    def floor(self, key: Key) -> int:
        """The highest seq this channel has let go: a resume from before it lost events."""
        ring = self._rings.get(key)
        if ring is not None:
            return ring.evicted_max
        return self._tombstones.get(key, self._forgotten_floor)

    def covers(self, keys: Sequence[Key], seq: int) -> bool:
        return all(self.floor(key) <= seq for key in keys)

    def oldest(self, keys: Sequence[Key]) -> int | None:
        seqs = [ring.oldest_seq() for key in keys if (ring := self._rings.get(key)) is not None]
        present = [s for s in seqs if s is not None]
        return min(present) if present else None

    def snapshots(self, keys: Sequence[Key]) -> list[Frame]:
        """Latest values of the latest-value topics among `keys`, without their ids."""
        out = []
        for kind, name in keys:
            if kind == "topic" and name in self._latest:
                frame = self._latest[name].snapshot()
                if frame is not None:
                    out.append(frame)
        return out

    def counts(self) -> dict[str, int]:
        return {
            "topics_retained": sum(1 for kind, _ in self._rings if kind == "topic"),
            "retained_events": self.store.count,
            "retained_bytes": self.store.bytes + self.store.latest_bytes,
        }

    # -- transfer ---------------------------------------------------------------

    def export(self, head: int, now: float) -> RetainedState:
        def retained(entry: Entry) -> RetainedEvent:
            frame = entry.frame
            return RetainedEvent(entry.seq, entry.topic, now - entry.ts, frame.raw, frame.chunked)

        rings = [
            RingState(
                kind,
                name,
                ring.evicted_max,
                [retained(e) for e in ring.entries],
                retained(ring.latest) if ring.latest is not None else None,
            )
            for (kind, name), ring in self._rings.items()
        ]
        tombstones = [(kind, name, seq) for (kind, name), seq in self._tombstones.items()]
        return RetainedState(head, rings, tombstones, self._forgotten_floor)

    def restore(self, state: RetainedState, now: float) -> None:
        """Seed from an export; entries go through the same bounds as live ones."""
        self._forgotten_floor = max(self._forgotten_floor, state.forgotten_floor)
        self._tombstones.update({(kind, name): seq for kind, name, seq in state.tombstones})
        merged: list[tuple[RetainedEvent, Ring]] = []
        latest: list[tuple[float, str, Ring]] = []
        for ring_state in state.rings:
            ring = self._ring((ring_state.kind, ring_state.key))
            ring.evicted_max = max(ring.evicted_max, ring_state.evicted_max)
            held = ring_state.latest
            if held is not None:
                frame = Frame.from_parts(held.raw, held.chunked)
                value = Entry(held.seq, frame, now - held.age_s, ring, None)
                self.store.set_latest(ring, value)
                if ring_state.kind == "topic":
                    latest.append((value.ts, ring_state.key, ring))
            merged.extend((entry, ring) for entry in ring_state.entries)
        for _, name, ring in sorted(latest, key=lambda item: item[0]):
            self._latest[name] = ring
        # The store's global order is by seq, as if they had been published here.
        merged.sort(key=lambda pair: pair[0].seq)
        for event, ring in merged:
            frame = Frame.from_parts(event.raw, event.chunked)
            self.store.retain(
                ring, Entry(event.seq, frame, now - event.age_s, ring, event.topic), False
            )
        self._bound_latest(now)
        for ring in list(self._rings.values()):
            self._maybe_prune(ring)

    # -- bookkeeping ------------------------------------------------------------

    def _ring(self, key: Key) -> Ring:
        ring = self._rings.get(key)
        if ring is None:
            floor = self._tombstones.pop(key, self._forgotten_floor)
            ring = self._rings[key] = Ring(key, floor)
        return ring

    def _bound_latest(self, now: float) -> None:
        r = self._replay
        cutoff = now - r.latest_max_age_s
        latest = self._latest
        store = self.store
        while latest:
            name, ring = next(iter(latest.items()))
            entry = ring.latest
            if (
                entry is not None
                and entry.ts >= cutoff
                and len(latest) <= r.max_latest_topics
                and not store.over_budget
            ):
                return
            del latest[name]
            store.set_latest(ring, None)
            self._maybe_prune(ring)

    def _maybe_prune(self, ring: Ring) -> None:
        if ring.entries or ring.latest is not None or ring.key == ALL:
            return
        if self._rings.get(ring.key) is not ring:
            return
        del self._rings[ring.key]
        if ring.evicted_max > self._forgotten_floor:
            self._tombstones[ring.key] = ring.evicted_max
            if len(self._tombstones) > MAX_TOMBSTONES:
                oldest = next(iter(self._tombstones))
                self._forgotten_floor = max(self._forgotten_floor, self._tombstones.pop(oldest))
