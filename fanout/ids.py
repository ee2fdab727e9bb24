"""Event ids: `<epoch>-<seq>`, strictly increasing within one daemon run.

The epoch is the daemon's start time in milliseconds (hex), so an id issued before a
restart is recognised as such and the client is told its position is gone, instead
of being silently compared with a sequence that restarted at 1.
"""

from __future__ import annotations

import enum
import time


def new_epoch() -> str:
    return format(time.time_ns() // 1_000_000, "x")


def format_id(epoch: str, seq: int) -> str:
    return f"{epoch}-{seq}"


class IdProblem(enum.Enum):
    MALFORMED = "malformed"
    OTHER_EPOCH = "other-epoch"
    FUTURE = "future"


def parse_id(text: str, epoch: str, head: int) -> int | IdProblem:
    """The seq of an id from this run, or why it cannot be resumed from."""
    their_epoch, sep, seq_text = text.partition("-")
    if (
        not sep
        or not their_epoch
        or not (seq_text.isascii() and seq_text.isdigit())
        or len(seq_text) > 19
    ):
        return IdProblem.MALFORMED
    if their_epoch != epoch:
        return IdProblem.OTHER_EPOCH
    seq = int(seq_text)
    if seq > head:
        return IdProblem.FUTURE
    return seq
