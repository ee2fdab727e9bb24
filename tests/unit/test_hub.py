"""The single process's parts together (Core, LocalGate, Publishing) with fake
transports (uvicorn MockTransport style): delivery, admission, replay, retention."""

from __future__ import annotations

import re

import pytest

from fanout.config import Limits, Replay
from fanout.hub import Subscriber
from fanout.ids import parse_id
from tests.unit.node import Node


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.buffered = 0
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def events(self) -> list[tuple[str | None, str, str]]:
        """(id, event, data) of every event written, raw framing assumed."""
        out = []
        for block in bytes(self.data).decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
            if "data" in fields:
                out.append((fields.get("id"), fields.get("event", "message"), fields["data"]))
        return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_hub(limits: Limits | None = None, replay: Replay | None = None) -> tuple[Node, Clock]:
    clock = Clock()
    return Node(clock, limits, replay), clock


def connect(
    hub: Node, topics=("a",), user=None, last_id=None, chunked=False
) -> tuple[Subscriber, FakeTransport]:
    transport = FakeTransport()
    sub = hub.new_subscriber(transport, chunked, user, frozenset(topics))
    transport.write(hub.open(sub, last_id))
    return sub, transport


def published(t: FakeTransport) -> list[str]:
    return [data for _, event, data in t.events() if event not in ("connected", "reset")]


def test_publish_reaches_topic_subscribers_once_and_no_one_else():
    hub, _ = make_hub()
    _, a1 = connect(hub, ["a"])
    _, a2 = connect(hub, ["a", "b"])
    _, b = connect(hub, ["b"])
    assert hub.publish("a", "m", b"1").sent == 2
    hub.flush()
    assert published(a1) == ["1"]
    assert published(a2) == ["1"]
    assert published(b) == []


def test_frames_are_shared_bytes_objects():
    hub, _ = make_hub()
    subs = [connect(hub, ["a"])[1] for _ in range(3)]
    for t in subs:
        t.data.clear()
    written: list[bytes] = []
    for t in subs:
        t.write = written.append  # type: ignore[method-assign]
    hub.publish("a", "m", b"1")
    hub.flush()
    assert len(written) == 3
    assert written[0] is written[1] is written[2]


def test_same_iteration_publishes_coalesce_into_one_write_in_order():
    hub, _ = make_hub()
    _, t = connect(hub, ["a"])
    t.data.clear()
    writes: list[bytes] = []
    t.write = writes.append  # type: ignore[method-assign]
    for n in range(5):
        hub.publish("a", "m", str(n).encode())
    hub.flush()
    assert len(writes) == 1
    assert writes[0].count(b"data: ") == 5


def test_interleaved_topics_keep_id_order_per_connection():
    hub, _ = make_hub()
    _, t = connect(hub, ["a", "b"])
    hub.publish("a", "m", b"a1")
    hub.publish("b", "m", b"b1")
    hub.publish("a", "m", b"a2")
    hub.flush()
    assert published(t) == ["a1", "b1", "a2"]
    ids = [parse_id(i, "e", hub.head) for i, _, _ in t.events()]
    assert ids == sorted(ids)


def test_chunked_peer_gets_chunk_framing():
    hub, _ = make_hub()
    _, t = connect(hub, ["a"], chunked=True)
    hub.publish("a", "m", b"1")
    hub.flush()
    assert re.fullmatch(rb"([0-9a-f]+\r\n[^\r]*\r\n)+", bytes(t.data))


def test_user_filtered_publish_reaches_only_that_users_connections_on_topic():
    hub, _ = make_hub()
    _, mine = connect(hub, ["a"], user="u")
    _, mine_other_topic = connect(hub, ["b"], user="u")
    _, theirs = connect(hub, ["a"], user="v")
    assert hub.publish("a", "m", b"x", user="u").sent == 1
    hub.flush()
    assert published(mine) == ["x"]
    assert published(mine_other_topic) == []
    assert published(theirs) == []


def test_broadcast_notify_send_counts():
    hub, _ = make_hub()
    s1, t1 = connect(hub, ["a"], user="u")
    _, t2 = connect(hub, ["b"], user="u")
    _, t3 = connect(hub, ["c"])
    d = hub.broadcast("m", b"all")
    assert (d.sent, d.total) == (3, 3)
    # One meaning in every mode: `sent` the connections addressed, `total` all open.
    d = hub.notify("u", "m", b"you")
    assert (d.sent, d.total) == (2, 3)
    d = hub.send(s1.id, "m", b"one")
    assert d is not None
    assert (d.sent, d.total) == (1, 3)
    assert hub.send("nope", "m", b"x") is None
    hub.flush()
    assert published(t1) == ["all", "you", "one"]
    assert published(t2) == ["all", "you"]
    assert published(t3) == ["all"]


def test_slow_subscriber_is_cut_and_others_still_get_everything():
    hub, _ = make_hub(Limits(max_buffered_bytes=1024))
    slow_sub, slow = connect(hub, ["a"])
    _, fast = connect(hub, ["a"])
    slow.buffered = 2048
    d = hub.broadcast("m", b"1")
    assert (d.sent, d.total) == (2, 2)  # addressed; the write finds one too slow
    hub.flush()
    assert slow.aborted
    assert not slow_sub.active
    assert hub.stats.dropped_slow == 1
    hub.publish("a", "m", b"2")
    hub.flush()
    assert published(fast) == ["1", "2"]
    assert hub.connections == 1


def test_per_user_reject_and_global_cap():
    hub, _ = make_hub(Limits(max_connections=3, max_connections_per_user=2))
    connect(hub, user="u")
    assert hub.refusal("u") is None
    connect(hub, user="u")
    refusal = hub.refusal("u")
    assert refusal is not None
    assert refusal.status == 429
    assert ("Retry-After", "5") in refusal.headers
    connect(hub)
    refusal = hub.refusal(None)
    assert refusal is not None
    assert refusal.status == 503


def test_evict_oldest_sends_reason_and_closes():
    hub, _ = make_hub(Limits(max_connections_per_user=2, per_user_policy="evict-oldest"))
    _, first = connect(hub, user="u")
    _, second = connect(hub, user="u")
    assert hub.refusal("u") is None
    _, third = connect(hub, user="u")
    assert first.closed
    assert first.events()[-1][1] == "evicted"
    assert "newer connection" in first.events()[-1][2]
    assert not second.closed
    assert not third.closed
    assert hub.user_connections("u") == 2


def test_close_is_idempotent_and_prunes_idle_topics():
    hub, _ = make_hub(replay=Replay(max_events_per_topic=0))
    sub, _ = connect(hub, ["x"])
    hub.close(sub)
    hub.close(sub)
    assert hub.connections == 0
    assert hub.counts()["topics_retained"] == 0


def test_resume_replays_missed_events_in_order_without_duplicates():
    hub, _ = make_hub()
    _, t = connect(hub, ["a", "b"])
    for n in range(3):
        hub.publish("a", "m", b"a%d" % n)
        hub.publish("b", "m", b"b%d" % n)
    hub.flush()
    last = t.events()[2][0]  # after a0, b0
    hub.broadcast("m", b"bc")
    hub.publish("c", "m", b"other topic")
    _, t2 = connect(hub, ["a", "b"], last_id=last)
    assert published(t2) == ["a1", "b1", "a2", "b2", "bc"]
    assert hub.stats.replays == 1
    assert hub.stats.replayed_events == 5


@pytest.mark.parametrize(
    ("last_id", "reason"), [("zzz", "malformed"), ("old-3", "other-epoch"), ("e-99", "future")]
)
def test_unusable_id_gets_reset_first(last_id, reason):
    hub, _ = make_hub()
    hub.publish("a", "m", b"kept")
    _, t = connect(hub, ["a"], last_id=last_id)
    events = t.events()
    assert events[0][1] == "reset"
    assert f'"reason":"{reason}"' in events[0][2]
    assert events[1][1] == "connected"
    assert published(t) == ["kept"]


def test_stale_id_after_eviction_gets_reset_with_oldest_id():
    hub, _ = make_hub(replay=Replay(max_events_per_topic=2))
    for n in range(5):
        hub.publish("a", "m", b"%d" % n)
    _, t = connect(hub, ["a"], last_id="e-1")
    events = t.events()
    assert events[0][1] == "reset"
    assert '"reason":"stale"' in events[0][2]
    assert '"oldestId":"e-4"' in events[0][2]
    assert published(t) == ["3", "4"]


def test_age_expiry_and_byte_budget():
    hub, clock = make_hub(replay=Replay(max_age_s=10, max_bytes_total=300))
    for _ in range(10):
        hub.publish("a", "m", b"x" * 40)
    assert hub.store.bytes <= 300
    clock.now += 11
    hub.expire()
    assert hub.store.count == 0
    _, t = connect(hub, ["a"], last_id="e-1")
    assert t.events()[0][1] == "reset"


def test_pruned_topic_still_reports_loss_through_tombstone():
    hub, clock = make_hub(replay=Replay(max_age_s=1))
    hub.publish("gone", "m", b"1")
    clock.now += 2
    hub.expire()
    assert hub.counts()["topics_retained"] == 0
    _, t = connect(hub, ["gone"], last_id="e-0")
    assert t.events()[0][1] == "reset"


def test_latest_value_topic_gives_new_subscriber_current_state_without_id():
    hub, _ = make_hub(replay=Replay(latest_value_topics=["progress:*"]))
    hub.publish("progress:1", "progress", b"10")
    hub.publish("progress:1", "progress", b"40")
    hub.publish("other", "m", b"no")
    _, t = connect(hub, ["progress:1", "other"])
    events = t.events()
    assert events[0][1] == "connected"
    assert events[-1] == (None, "progress", "40")
    assert published(t) == ["40"]


def test_connected_id_is_the_resume_position():
    hub, _ = make_hub()
    hub.publish("a", "m", b"before")
    _, t = connect(hub, ["a"])
    connected_id = t.events()[0][0]
    assert connected_id == "e-1"
    hub.publish("a", "m", b"missed")
    _, t2 = connect(hub, ["a"], last_id=connected_id)
    assert published(t2) == ["missed"]


def test_subscribe_flushes_pending_first_so_nothing_is_doubled():
    hub, _ = make_hub()
    _, early = connect(hub, ["a"])
    hub.publish("a", "m", b"1")  # queued, not flushed
    _, late = connect(hub, ["a"])
    hub.flush()
    assert published(early) == ["1"]
    assert published(late) == []


def test_shutdown_sends_jittered_retry_and_closes():
    hub, _ = make_hub()
    _, t = connect(hub, ["a"], chunked=True)
    assert hub.shutdown() == 1
    assert t.closed
    assert t.data.endswith(b"0\r\n\r\n")
    retry = int(re.findall(rb"retry: (\d+)", bytes(t.data))[-1])
    assert 3000 <= retry <= 8000
    refusal = hub.refusal(None)
    assert refusal is not None
    assert refusal.status == 503


def test_exported_state_seeds_another_hub_with_the_same_replay():
    import msgspec

    from fanout.retention import RetainedState

    source, _ = make_hub(replay=Replay(max_events_per_topic=3, latest_value_topics=["p:*"]))
    for n in range(5):
        source.publish("a", "m", b"%d" % n)
    source.publish("p:1", "progress", b"50")
    source.notify("u", "m", b"note")
    wire = msgspec.msgpack.encode(source.retention.export(source.head, 1000.0))
    seeded, _ = make_hub(replay=Replay(max_events_per_topic=3, latest_value_topics=["p:*"]))
    state = msgspec.msgpack.decode(wire, type=RetainedState)
    seeded.retention.restore(state, 1000.0)
    seeded.core.ids.observe(state.head)
    assert seeded.head == source.head
    # Same replay after a retained id, same reset for an evicted one.
    _, t = connect(seeded, ["a"], last_id="e-3", user="u")
    assert published(t) == ["3", "4", "note"]
    _, stale = connect(seeded, ["a"], last_id="e-1")
    assert stale.events()[0][1] == "reset"
    _, fresh = connect(seeded, ["p:1"])
    assert fresh.events()[-1] == (None, "progress", "50")


def test_latest_values_are_bounded_by_age_and_count():
    hub, clock = make_hub(
        replay=Replay(
            latest_value_topics=["p:*"], max_age_s=10, latest_max_age_s=100, max_latest_topics=2
        )
    )
    for n in range(3):
        hub.publish(f"p:{n}", "progress", b"%d" % n)
    # Only the two most recently updated topics keep a latest value.
    _, t0 = connect(hub, ["p:0"])
    assert published(t0) == []
    _, t2 = connect(hub, ["p:2"])
    assert published(t2) == ["2"]
    # Past the ring's age the latest value stays; past its own age it goes, and the
    # topic, with no subscriber left, is pruned.
    clock.now += 50
    hub.expire()
    sub, late = connect(hub, ["p:1"])
    assert published(late) == ["1"]
    hub.close(sub)
    clock.now += 100
    hub.expire()
    # p:1's latest value went; subscribers (p:0, p:2) live in the hub, not in retention.
    assert hub.counts()["topics_retained"] == 0
    assert hub.counts()["topics"] == 2
    _, later = connect(hub, ["p:1"])
    assert published(later) == []


class DeadTransport(FakeTransport):
    """A transport closed under us: writes raise, as uvloop's do."""

    def write(self, data: bytes) -> None:
        raise RuntimeError("unable to perform operation: the handler is closed")

    def is_closing(self) -> bool:
        return True


def test_a_transport_closed_under_a_flush_does_not_stop_the_others():
    hub, _ = make_hub()
    _, before = connect(hub, ["a"], user="u")
    dead_sub = hub.new_subscriber(DeadTransport(), False, "u", frozenset({"a"}))
    FakeTransport.write(dead_sub.transport, hub.open(dead_sub, None))
    _, after = connect(hub, ["a", "b"])
    hub.publish("a", "m", b"to u", user="u")
    hub.publish("a", "m", b"1")
    hub.publish("b", "m", b"2")
    hub.flush()
    assert published(before) == ["to u", "1"]
    assert published(after) == ["1", "2"]
    assert not dead_sub.active
    assert hub.stats.dropped_slow == 0  # gone, not slow
