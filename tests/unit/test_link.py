import pytest

from fanout import link
from fanout.config import Config
from fanout.retention import RetainedEvent, RetainedState, RingState

MESSAGES: list[link.Message] = [
    link.Hello(1, "e", Config(), ["127.0.0.1:8080", None], [None, 7]),
    link.Seed(
        RetainedState(
            5,
            [RingState("topic", "a", 2, [RetainedEvent(3, None, 0.5, b"r", b"c")], None)],
            [("topic", "gone", 1)],
            0,
        )
    ),
    link.Event(4, "topic", "a", None, b"id: e-4\ndata: 1\n\n", b"11\r\n...\r\n"),
    link.Event(5, "user", "u", "t", b"raw", b"chunked"),
    link.Admit("e.1.1", "alice", ["a", "b"]),
    link.Verdict("e.1.1", 429, "too many", [("Retry-After", "5")]),
    link.Verdict("e.1.2", 0),
    link.Evict("e.1.1", "newer connection"),
    link.Closed("e.1.1"),
    link.StatsQuery(3),
    link.StatsReply(3, {"delivered": 10, "refused": {"429": 1}}),
    link.Reload(Config()),
    link.Ready(1234),
]
WIRE = b"".join(link.encode(m) for m in MESSAGES)


def test_whole_stream_round_trips():
    assert link.Decoder().feed(WIRE) == MESSAGES


def test_one_byte_at_a_time():
    decoder = link.Decoder()
    out = []
    for i in range(len(WIRE)):
        out += decoder.feed(WIRE[i : i + 1])
    assert out == MESSAGES


def test_trailing_partial_message_waits():
    decoder = link.Decoder()
    one = link.encode(link.Ready(1))
    assert decoder.feed(WIRE + one[:3]) == MESSAGES
    assert decoder.feed(one[3:]) == [link.Ready(1)]


def test_garbage_is_a_link_error():
    with pytest.raises(link.LinkError):
        link.Decoder().feed(b"\x00\x00\x00\x02\xc1\xc1")
    with pytest.raises(link.LinkError, match="bytes"):
        link.Decoder().feed(b"\xff\xff\xff\xff")
