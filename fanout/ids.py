"""Event ids: `<epoch>-<seq>`, strictly increasing within one daemon run.

The epoch is the daemon's start time in milliseconds (hex), so an id issued before a
restart is recognised as such and the client is told its position is gone, instead
of being silently compared with a sequence that restarted at 1.
"""

from __future__ import annotations

import enum
import time

from .sse import Frame, encode_event


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


class Sequencer:
    """The id space of one run: its epoch and the last seq issued or seen in it.

    A single process and the supervisor issue seqs (`next`); a worker and a daemon on
    the backplane take seqs assigned elsewhere (`observe`), so an id from them is
    never mistaken for one from the future.
    """

    __slots__ = ("epoch", "head")

    def __init__(self, epoch: str, head: int = 0) -> None:
        self.epoch = epoch
        self.head = head

    def next(self) -> int:
        self.head += 1
        return self.head

    def observe(self, seq: int) -> None:
        if seq > self.head:
            self.head = seq

    def restart(self, epoch: str) -> None:
        self.epoch = epoch
        self.head = 0

    def id(self, seq: int) -> str:
        return format_id(self.epoch, seq)

    def parse(self, text: str) -> int | IdProblem:
        return parse_id(text, self.epoch, self.head)

    def frame(self, seq: int, event: str, payload: bytes) -> Frame:
        """The frame of the event with id `seq` in this epoch: its one encoding."""
        return Frame(encode_event(payload, id=self.id(seq), event=event))
