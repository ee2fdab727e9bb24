"""The parts under the hub, values in and values out: admission, routes, the id space,
retention and a stream's opening."""

from __future__ import annotations

import orjson
import pytest

from fanout.admission import decide
from fanout.config import Limits, Replay
from fanout.ids import IdProblem, Sequencer
from fanout.opening import Who, covers, opening
from fanout.retention import Retention
from fanout.route import ALL, Route, keys_of
from fanout.stats import Stats
from tests.unit.node import Node
from tests.unit.test_hub import Clock, FakeTransport, connect


@pytest.mark.parametrize(
    ("limits", "draining", "total", "older", "status", "evict"),
    [
        (Limits(), True, 0, [], 503, []),
        (Limits(max_connections_per_user=2), False, 0, ["a"], None, []),
        (Limits(max_connections_per_user=2), False, 0, ["a", "b"], 429, []),
        (Limits(max_connections=2), False, 2, [], 503, []),
        # Evict-oldest frees the slot the new one takes, even on a full server.
        (
            Limits(max_connections=2, max_connections_per_user=2, per_user_policy="evict-oldest"),
            False,
            2,
            ["a", "b"],
            None,
            ["a"],
        ),
        # Over the limit already (it was lowered): enough go for one more to fit.
        (
            Limits(max_connections_per_user=1, per_user_policy="evict-oldest"),
            False,
            3,
            ["a", "b", "c"],
            None,
            ["a", "b", "c"],
        ),
    ],
)
def test_admission_rule(limits, draining, total, older, status, evict):
    decision = decide(limits, draining, total, older)
    assert (decision.refusal.status if decision.refusal else None) == status
    assert decision.evict == evict
    if decision.refusal is not None:
        assert ("Retry-After", str(limits.retry_after_s)) in decision.refusal.headers


def test_which_events_reach_a_subscription():
    topics = frozenset({"a"})
    assert Route("topic", "a").reaches(topics, None)
    assert not Route("topic", "b").reaches(topics, "u")
    assert Route("all", "").reaches(frozenset(), None)
    assert Route("user", "u").reaches(frozenset(), "u")
    assert not Route("user", "u").reaches(topics, "v")
    assert Route("user", "u", "a").reaches(topics, "u")
    assert not Route("user", "u", "b").reaches(topics, "u")
    assert Route("conn", "x.1").reaches(topics, None, "x.1")
    assert Route("conn", "x.1").channel is None
    assert keys_of(frozenset({"b", "a"}), "u") == [
        ("topic", "a"),
        ("topic", "b"),
        ALL,
        ("user", "u"),
    ]


def test_the_id_space():
    ids = Sequencer("e")
    assert [ids.next(), ids.next()] == [1, 2]
    ids.observe(10)
    ids.observe(4)
    assert ids.head == 10
    assert ids.parse("e-10") == 10
    assert ids.parse("e-11") is IdProblem.FUTURE
    assert ids.parse("f-1") is IdProblem.OTHER_EPOCH
    assert ids.parse("nonsense") is IdProblem.MALFORMED
    assert ids.frame(3, "m", b"1").raw == b"id: e-3\nevent: m\ndata: 1\n\n"
    ids.restart("f")
    assert (ids.epoch, ids.head) == ("f", 0)


def test_retention_keeps_a_users_topic_events_from_other_connections():
    ids, kept = Sequencer("e"), Retention(Replay())
    for route in (Route("topic", "a"), Route("user", "u", "b"), Route("user", "u")):
        seq = ids.next()
        kept.retain(route, seq, ids.frame(seq, "m", b"%d" % seq), 0.0)
    kept.retain(Route("conn", "x.1"), ids.next(), ids.frame(4, "m", b"4"), 0.0)
    on_a = [e.seq for e in kept.since(keys_of(frozenset({"a"}), "u"), frozenset({"a"}), 0)]
    on_b = [e.seq for e in kept.since(keys_of(frozenset({"b"}), "u"), frozenset({"b"}), 0)]
    assert on_a == [1, 3]
    assert on_b == [2, 3]
    assert kept.counts()["retained_events"] == 3  # never the one for one connection


def test_a_pruned_ring_remembers_how_far_it_let_go():
    ids, kept = Sequencer("e"), Retention(Replay(max_events_per_topic=1, max_age_s=10))
    for _ in range(3):
        seq = ids.next()
        kept.retain(Route("topic", "a"), seq, ids.frame(seq, "m", b""), 0.0)
    kept.expire(100.0)
    keys = keys_of(frozenset({"a"}), None)
    assert kept.counts()["topics_retained"] == 0
    assert kept.floor(("topic", "a")) == 3
    assert not kept.covers(keys, 2)
    assert kept.covers(keys, 3)
    kept.mark_gap(7)
    assert not kept.covers(keys, 5)
    assert kept.floor(("topic", "never-seen")) == 7


def test_opening_of_a_fresh_stream_and_of_a_stale_resume():
    ids, kept, stats = Sequencer("e"), Retention(Replay(max_events_per_topic=2)), Stats()
    for _ in range(4):
        seq = ids.next()
        kept.retain(Route("topic", "a"), seq, ids.frame(seq, "m", b"%d" % seq), 0.0)
    who = Who("c.1", None, frozenset({"a"}), keys_of(frozenset({"a"}), None))
    fresh = opening(ids, kept, stats, b"retry: 1\n\n", who, None)
    assert fresh.bodies[0] == b"retry: 1\n\n"
    assert fresh.bodies[1].startswith(b"id: e-4\nevent: connected\n")
    assert (len(fresh.bodies), fresh.frames, fresh.cursor) == (2, [], 4)
    assert covers(ids, kept, who.keys, "e-2")
    assert not covers(ids, kept, who.keys, "e-1")
    stale = opening(ids, kept, stats, b"", who, "e-1")
    reset = orjson.loads(stale.bodies[1].split(b"data: ", 1)[1])
    assert (reset["reason"], reset["oldestId"]) == ("stale", "e-3")
    assert stale.bodies[2].startswith(b"id: e-2\nevent: connected\n")
    # The replay is the retained frames themselves, shared, not a copy per connection.
    retained = kept.since(who.keys, who.topics, 0)
    assert all(f is e.frame for f, e in zip(stale.frames, retained, strict=True))
    assert stale.cursor == 4
    assert (stats.resets, stats.replays, stats.replayed_events) == (1, 1, 2)


def test_an_event_for_a_user_on_one_topic_is_activity_for_its_connections():
    # Regression: such an event went out in a Group whose last write was never read,
    # so the connection still got a heartbeat right after it.
    clock = Clock()
    node = Node(clock)
    sub, _ = connect(node, ["a"], user="u")
    other, _ = connect(node, ["b"], user="u")
    clock.now += 30
    node.publish("a", "m", b"1", user="u")
    node.flush()
    assert sub.last_activity() == clock.now
    assert other.last_activity() < clock.now


def _held(kept: Retention) -> int:
    """What retention really holds: both framings of every ring entry, and each latest
    value's entry and id-less copy (counted even when its entry is also in a ring)."""
    rings = kept._rings.values()
    entries = sum(len(e.frame.raw) + len(e.frame.chunked) for r in rings for e in r.entries)
    latest = sum(
        len(r.latest.frame.raw) * 2 + len(r.latest.frame.chunked)
        for r in rings
        if r.latest is not None
    )
    return entries + latest


def test_the_byte_budget_counts_both_framings_and_latest_values():
    budget = 64 * 1024
    ids = Sequencer("e")
    kept = Retention(Replay(max_bytes_total=budget, latest_value_topics=["p:*"]))
    payload = b"x" * 5000
    for n in range(40):
        topic = f"p:{n}" if n % 2 else "a"
        seq = ids.next()
        kept.retain(Route("topic", topic), seq, ids.frame(seq, "m", payload), float(n))
        reported = kept.counts()["retained_bytes"]
        assert reported == _held(kept)
        assert reported <= budget
    # Latest values only go once no ring entry is left, least recently updated first.
    assert kept.counts()["retained_events"] == 0
    names = [name for (kind, name) in kept._rings if kind == "topic"]
    assert names == ["p:33", "p:35", "p:37", "p:39"]  # four fit: about 15 KB each


def test_an_opening_catches_up_on_what_was_published_while_it_was_written():
    clock = Clock()
    node = Node(clock, replay=Replay(max_events_per_topic=3))
    for n in range(2):
        node.publish("a", "m", b"%d" % n)
    transport = FakeTransport()
    sub = node.new_subscriber(transport, False, None, frozenset({"a"}))
    opening = node.core.open(sub, "e-0", None)
    assert [f.raw.split(b"\n")[0] for f in opening.frames] == [b"id: e-1", b"id: e-2"]
    # Still being written: counted, but not delivered to.
    node.publish("a", "m", b"2")
    node.flush()
    assert node.connections == 1
    assert transport.data == b""
    opening.frames = []
    assert node.core.catch_up(sub, opening)  # e-3 came meanwhile
    assert [f.raw.split(b"\n")[0] for f in opening.frames] == [b"id: e-3"]
    opening.frames = []
    assert not node.core.catch_up(sub, opening)  # nothing more: live
    node.publish("a", "m", b"3")
    node.flush()
    assert transport.events()[-1][0] == "e-4"


def test_an_opening_that_fell_behind_the_rings_is_told_before_it_goes_live():
    clock = Clock()
    node = Node(clock, replay=Replay(max_events_per_topic=2))
    node.publish("a", "m", b"0")
    sub = node.new_subscriber(FakeTransport(), False, None, frozenset({"a"}))
    opening = node.core.open(sub, "e-0", None)
    opening.frames = []
    for n in range(1, 5):  # the ring lets e-1.. go before they were sent
        node.publish("a", "m", b"%d" % n)
    assert not node.core.catch_up(sub, opening)
    reset = orjson.loads(opening.bodies[-1].split(b"data: ", 1)[1])
    assert reset["reason"] == "stale"
    assert node.stats.resets == 1
