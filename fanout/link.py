"""The supervisor <-> worker link, sans-IO: messages and their length-prefixed framing.

The supervisor encodes each event once and sends the same frame bytes to every
worker; workers ask it to admit connections (limits hold across workers) and report
counters. msgpack via msgspec: typed, compact, no copy of the frame beyond the write.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
from msgspec import Struct

from .config import Config
from .retention import RetainedState

_LENGTH = struct.Struct("!I")
MAX_MESSAGE_BYTES = 1 << 30


class Hello(Struct, tag="hello"):
    """First message to a worker: who it is and what to serve."""

    index: int
    epoch: str
    config: Config
    # Per config.listener entry: the resolved "host:port" a TCP listener binds with
    # SO_REUSEPORT, or None for a Unix listener whose socket the worker inherits.
    tcp: list[str | None]
    unix_fds: list[int | None]


class Seed(Struct, tag="seed"):
    state: RetainedState


class Event(Struct, tag="ev"):
    seq: int
    kind: str
    key: str
    topic: str | None
    raw: bytes
    chunked: bytes


class Admit(Struct, tag="admit"):
    conn: str
    user: str | None
    topics: list[str]
    # On the backplane the supervisor may resume it from the shared stream.
    last_event_id: str | None = None


class Verdict(Struct, tag="verdict"):
    conn: str
    status: int  # 0: admitted
    reason: str = ""
    headers: list[tuple[str, str]] = msgspec.field(default_factory=list)
    # (seq, raw, chunked) of events read back from the shared stream (backplane).
    backfill: list[tuple[int, bytes, bytes]] = msgspec.field(default_factory=list)


class Evict(Struct, tag="evict"):
    conn: str
    reason: str


class Closed(Struct, tag="closed"):
    conn: str


class StatsQuery(Struct, tag="statsq"):
    n: int


class StatsReply(Struct, tag="stats"):
    n: int
    data: dict[str, Any]


class Reload(Struct, tag="reload"):
    config: Config


class Ready(Struct, tag="ready"):
    pid: int


class NewEpoch(Struct, tag="epoch"):
    """The shared stream was lost: a new id space (fanout.core.Core.new_epoch)."""

    epoch: str


class Gap(Struct, tag="gap"):
    """Events up to `upto` may have been missed (fanout.core.Core.gap)."""

    upto: int


Message = (
    Hello
    | Seed
    | Event
    | Admit
    | Verdict
    | Evict
    | Closed
    | StatsQuery
    | StatsReply
    | Reload
    | Ready
    | NewEpoch
    | Gap
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


class LinkError(Exception):
    """The peer sent something that is not a message: the link cannot go on."""


def encode(message: Message) -> bytes:
    body = _encoder.encode(message)
    return _LENGTH.pack(len(body)) + body


class Decoder:
    """Bytes in (any split), whole messages out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        buf = self._buffer
        buf += data
        out: list[Message] = []
        start = 0
        while len(buf) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buf, start)
            if length > MAX_MESSAGE_BYTES:
                raise LinkError(f"message of {length} bytes")
            end = start + _LENGTH.size + length
            if len(buf) < end:
                break
            try:
                out.append(_decoder.decode(memoryview(buf)[start + _LENGTH.size : end]))
            except msgspec.DecodeError as exc:
                raise LinkError(str(exc)) from None
            start = end
        del buf[:start]
        return out
