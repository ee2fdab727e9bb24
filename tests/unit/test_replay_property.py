"""Property: replay-to-live switching loses nothing and doubles nothing.

Random interleavings of publishes on several topics, broadcasts, flushes,
disconnects and reconnects with the last id each client saw. A model of the replay
rings (the last K events of each channel) says, independently of the hub, what
each session must receive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.config import Replay
from fanout.hub import Subscriber
from tests.unit.node import Node
from tests.unit.test_hub import Clock, FakeTransport

K = 4  # events retained per channel
TOPICS = ("a", "b", "c")
CLIENT_TOPICS = (frozenset({"a"}), frozenset({"a", "b"}), frozenset({"c"}), frozenset({"b", "c"}))
BROADCAST = "*"


@dataclass
class Session:
    last_id: str | None
    transport: FakeTransport
    sub: Subscriber
    reset_expected: bool
    retained_at_connect: list[int]
    head_at_connect: int
    resume_id: str | None = None  # the last id this session saw, sent by the next one


@dataclass
class Client:
    topics: frozenset[str]
    sessions: list[Session] = field(default_factory=list)
    live: Session | None = None


def seq(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


ops = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.sampled_from((*TOPICS, BROADCAST))),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("drop"), st.integers(0, len(CLIENT_TOPICS) - 1)),
        st.tuples(st.just("connect"), st.integers(0, len(CLIENT_TOPICS) - 1)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_every_session_gets_exactly_what_it_missed_then_live(operations):
    clock = Clock()
    hub = Node(clock, replay=Replay(max_events_per_topic=K))
    log: list[tuple[int, str]] = []  # (seq, topic or BROADCAST), in publish order
    clients = [Client(topics) for topics in CLIENT_TOPICS]

    def channel_log(name: str) -> list[int]:
        return [s for s, t in log if t == name]

    def connect(client: Client) -> None:
        last_id = client.sessions[-1].resume_id if client.sessions else None
        last = seq(last_id) if last_id is not None else None
        channels = [*client.topics, BROADCAST]
        retained = sorted(s for ch in channels for s in channel_log(ch)[-K:])
        evicted = [channel_log(ch)[:-K] for ch in channels]
        reset = last is not None and any(ev and ev[-1] > last for ev in evicted)
        transport = FakeTransport()
        sub = hub.new_subscriber(transport, False, None, client.topics)
        transport.write(hub.open(sub, last_id))
        client.live = Session(last_id, transport, sub, reset, retained, hub.head)
        client.sessions.append(client.live)

    def drop(client: Client) -> None:
        session = client.live
        assert session is not None
        hub.close(session.sub)
        session.resume_id = last_seen_id(session.transport)
        client.live = None

    for client in clients:
        connect(client)
    for op, arg in operations:
        if op == "pub":
            d = hub.broadcast("m", b"1") if arg == BROADCAST else hub.publish(arg, "m", b"1")
            log.append((seq(d.id), arg))
        elif op == "flush":
            hub.flush()
        elif op == "drop" and clients[arg].live is not None:
            drop(clients[arg])
        elif op == "connect" and clients[arg].live is None:
            connect(clients[arg])
    hub.flush()
    for client in clients:
        if client.live is None:
            connect(client)
        drop(client)

    for client in clients:
        wanted = [s for s, t in log if t in client.topics or t == BROADCAST]
        for session in client.sessions[:-1]:
            check_session(session, wanted)
        # The final session connected after everything was published and flushed:
        # it must hold all the rest, so across sessions nothing is missing.
        final = client.sessions[-1]
        assert received(final.transport) == check_session(final, wanted)


def last_seen_id(transport: FakeTransport) -> str | None:
    ids = [i for i, _, _ in transport.events() if i is not None]
    return ids[-1] if ids else None


def received(transport: FakeTransport) -> list[int]:
    return [seq(i) for i, event, _ in transport.events() if event == "m" and i is not None]


def check_session(session: Session, wanted: list[int]) -> list[int]:
    got = received(session.transport)
    events = [event for _, event, _ in session.transport.events()]
    assert got == sorted(set(got)), "duplicate or out of order"
    assert set(got) <= set(wanted), "an event for someone else"
    if session.reset_expected:
        assert events[0] == "reset"
        last = seq(session.last_id) if session.last_id else 0
        replay = [s for s in session.retained_at_connect if s > last]
        live = [s for s in wanted if s > session.head_at_connect]
        expected = replay + live
    else:
        assert "reset" not in events
        start = seq(session.last_id) if session.last_id is not None else session.head_at_connect
        expected = [s for s in wanted if s > start]
    # A session sees a prefix of what it should: the rest is what the next session
    # (resuming from the last id this one saw) must replay.
    assert got == expected[: len(got)]
    return expected
