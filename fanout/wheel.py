"""A hashed timer wheel, sans-IO: one loop timer drives every connection's deadline.

Thousands of connections each need a heartbeat or a header-read timeout. One asyncio
timer per connection costs a heap entry and a handle each; the wheel costs one dict
slot per deadline and O(1) schedule and cancel (Netty's HashedWheelTimer: "do not
create many instances"). Deadlines fire at tick granularity, never early.

The wheel never reads a clock: callers pass `now` to `advance`, so tests drive it
with plain numbers.
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

T = TypeVar("T")


class Timer(Generic[T]):
    __slots__ = ("item", "slot", "tick")

    def __init__(self, item: T, tick: int, slot: dict[Timer[T], None]) -> None:
        self.item = item
        self.tick = tick
        self.slot = slot


class Wheel(Generic[T]):
    def __init__(self, tick_s: float, slots: int = 512, now: float = 0.0) -> None:
        if tick_s <= 0 or slots < 1:
            raise ValueError("tick_s must be > 0 and slots >= 1")
        self.tick_s = tick_s
        self._slots: list[dict[Timer[T], None]] = [{} for _ in range(slots)]
        # The last tick whose timers have been handed out.
        self._done = math.floor(now / tick_s)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def schedule(self, deadline: float, item: T) -> Timer[T]:
        # Rounded up so a timer never fires before its deadline; a deadline already
        # past fires on the next advance.
        tick = max(math.ceil(deadline / self.tick_s), self._done + 1)
        slot = self._slots[tick % len(self._slots)]
        timer = Timer(item, tick, slot)
        slot[timer] = None
        self._count += 1
        return timer

    def cancel(self, timer: Timer[T]) -> None:
        if timer.slot.pop(timer, 0) is None:
            self._count -= 1

    def advance(self, now: float) -> list[T]:
        """Remove and return the items of every timer whose deadline is <= now."""
        target = math.floor(now / self.tick_s)
        if target <= self._done:
            return []
        expired: list[T] = []
        n = len(self._slots)
        # A jump longer than a lap visits each slot once instead of each tick.
        first = max(self._done + 1, target - n + 1)
        for tick in range(first, target + 1):
            slot = self._slots[tick % n]
            if not slot:
                continue
            due = [t for t in slot if t.tick <= target]
            for timer in due:
                del slot[timer]
                expired.append(timer.item)
        self._done = target
        self._count -= len(expired)
        return expired
