"""A stream's first bytes, sans-IO: retry, reset, connected, backfill, replay, snapshots.

Whether a client resumes (Last-Event-ID), starts fresh, or cannot be resumed (its id
is malformed, from another epoch, ahead of us, or older than what is retained), the
opening says so before anything else, then carries it to the live stream with no gap
and no duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from . import sse
from .ids import IdProblem, Sequencer
from .retention import Retention
from .route import Key
from .stats import Stats

# (seq, frame) of events read back from a shared stream, oldest first.
Backfill = list[tuple[int, sse.Frame]]

RESET_MESSAGES = {
    "stale": "events after your Last-Event-ID are no longer retained; refetch your state",
    "other-epoch": "your Last-Event-ID is from before a restart of the daemon; refetch your state",
    "malformed": "your Last-Event-ID is not an id this daemon issued; refetch your state",
    "future": "your Last-Event-ID is ahead of this daemon; refetch your state",
}


class Whom(Protocol):
    """The connection an opening is for (a hub Subscriber is one)."""

    @property
    def id(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def topics(self) -> frozenset[str]: ...
    @property
    def keys(self) -> Sequence[Key]: ...


@dataclass(frozen=True, slots=True)
class Who:
    id: str
    user: str | None
    topics: frozenset[str]
    keys: Sequence[Key]


def covers(ids: Sequencer, retention: Retention, keys: Sequence[Key], last_event_id: str) -> bool:
    """Whether the rings alone can resume from `last_event_id` (else: a reset, or a
    backfill from a shared stream). Unusable ids count as covered: they get a reset
    whatever a stream holds."""
    parsed = ids.parse(last_event_id)
    return isinstance(parsed, IdProblem) or retention.covers(keys, parsed)


@dataclass(slots=True)
class Opening:
    """A stream's first bytes: a few small bodies of its own (retry, reset, connected),
    then the shared frames of the events it missed, then, once those are written,
    whatever was retained after `cursor` meanwhile (fanout.core.Core.catch_up)."""

    bodies: list[bytes]
    frames: list[sse.Frame]
    cursor: int  # the seq of the last event in `frames` (or the position)
    paused: bool = False  # the transport's buffer is over its high water mark


def opening(
    ids: Sequencer,
    retention: Retention,
    stats: Stats,
    retry: bytes,
    who: Whom,
    last_event_id: str | None,
    backfill: Backfill | None = None,
) -> Opening:
    bodies = [retry]
    since: int | None = None
    problem: str | None = None
    older: Backfill = []
    if last_event_id is not None:
        parsed = ids.parse(last_event_id)
        if isinstance(parsed, IdProblem):
            problem, since = parsed.value, 0
        else:
            since = parsed
            if backfill:
                # Events newer than our head come live once registered.
                older = [(seq, frame) for seq, frame in backfill if seq <= ids.head]
                if older:
                    since = older[-1][0]
            if not retention.covers(who.keys, since):
                problem = "stale"
    entries = retention.since(who.keys, who.topics, since) if since is not None else []
    if problem is not None:
        stats.resets += 1
        bodies.append(reset_body(ids, retention, who, last_event_id, problem))
    # The position before the first event sent: the connected event's id.
    first = older[0][0] if older else entries[0].seq if entries else ids.head + 1
    bodies.append(_connected(ids, who, first - 1))
    # Shared frames, never joined per connection: a thousand connections replaying
    # the same events hold one copy of them.
    frames = [frame for _, frame in older]
    frames += [entry.frame for entry in entries]
    cursor = entries[-1].seq if entries else older[-1][0] if older else ids.head
    if since is None:
        frames += retention.snapshots(who.keys)
    else:
        stats.replays += 1
        stats.replayed_events += len(entries) + len(older)
    return Opening(bodies, frames, cursor)


def reset_body(
    ids: Sequencer, retention: Retention, who: Whom, last_event_id: str | None, problem: str
) -> bytes:
    oldest = retention.oldest(who.keys)
    data = {
        "reason": problem,
        "lastEventId": last_event_id,
        "oldestId": ids.id(oldest) if oldest is not None else None,
        "message": RESET_MESSAGES[problem],
    }
    return sse.encode_event(orjson.dumps(data), event="reset")


def _connected(ids: Sequencer, who: Whom, position: int) -> bytes:
    # The id is the stream's position: a client that drops before any event resumes
    # from here rather than from nothing.
    data = {"connection": who.id, "user": who.user, "topics": sorted(who.topics)}
    return sse.encode_event(orjson.dumps(data), id=ids.id(position), event="connected")


def framed(bodies: list[bytes], chunked: bool) -> bytes:
    if chunked:
        return b"".join([sse.chunk(body) for body in bodies])
    return b"".join(bodies)
