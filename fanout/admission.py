"""Admission, sans-IO: who may open a stream now, and whom a new one evicts.

One rule for every composition: a single process counts its own connections, the
supervisor counts its workers', and the backplane counts a user's connections on
every daemon in Redis. Each passes what it counts; the verdict is decided here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .config import Limits

T = TypeVar("T")

EVICTED = "evicted: this user opened a newer connection"


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision(Generic[T]):
    refusal: Refusal | None
    evict: list[T] = field(default_factory=list)


def decide(limits: Limits, draining: bool, total: int, older: Sequence[T]) -> Decision[T]:
    """`total`: connections open now; `older`: the user's connections admitted before
    this one, oldest first (empty for an anonymous one).

    Under evict-oldest the new connection takes the slot of the oldest ones, so a full
    server still admits it; the order of `older` is what makes this race-free on the
    backplane, where concurrent newcomers each see only the connections before them.
    """
    retry_after = (("Retry-After", str(limits.retry_after_s)),)
    if draining:
        return Decision(Refusal(503, "shutting down", retry_after))
    limit = limits.max_connections_per_user
    user_full = len(older) >= limit
    if user_full and limits.per_user_policy == "reject":
        reason = f"too many connections for this user (at most {limit})"
        return Decision(Refusal(429, reason, retry_after))
    if total >= limits.max_connections and not user_full:
        return Decision(Refusal(503, "server full", retry_after))
    if user_full:
        return Decision(None, list(older[: len(older) - limit + 1]))
    return Decision(None)
