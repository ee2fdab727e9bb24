"""Resume without loss: Last-Event-ID replay, in-band reset, latest-value topics."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from fanout.client import AsyncPublisher
from tests.sse_client import subscribe

pytestmark = pytest.mark.integration


class Resumer(asyncio.Protocol):
    """A raw subscriber that remembers its last id and every event seq it got."""

    def __init__(self, target: str, last_id: str | None, seqs: list[int]) -> None:
        self.target = target
        self.last_id = last_id
        self.seqs = seqs
        self.buf = b""
        self.end_seen = asyncio.Event()
        self.ready = asyncio.Event()
        self.gone = asyncio.Event()
        self.resets: list[str] = []
        self._progress = asyncio.Event()

    async def until(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` events have been recorded (in the shared list)."""
        async with asyncio.timeout(timeout):
            while len(self.seqs) < count:
                self._progress.clear()
                await self._progress.wait()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        extra = f"Last-Event-ID: {self.last_id}\r\n" if self.last_id else ""
        request = f"GET {self.target} HTTP/1.0\r\nHost: x\r\n{extra}\r\n"
        transport.write(request.encode())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self.buf = buf
            return
        complete, self.buf = buf[: cut + 2], buf[cut + 2 :]
        for block in complete.split(b"\n\n"):
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
            if b"id" in fields:
                self.last_id = fields[b"id"].decode()
            event = fields.get(b"event")
            if event == b"connected":
                self.ready.set()
            elif event == b"end":
                self.end_seen.set()
            elif event == b"reset":
                self.resets.append(orjson.loads(fields[b"data"])["lastEventId"])
            elif event is not None and b"id" in fields:
                self.seqs.append(int(fields[b"id"].rsplit(b"-", 1)[1]))
        self._progress.set()


async def open_resumer(daemon, target: str, last_id: str | None, seqs: list[int]) -> Resumer:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        lambda: Resumer(target, last_id, seqs), daemon.host, daemon.port
    )
    return proto


async def test_2000_cut_at_once_resume_with_zero_loss_and_zero_duplicates(start_daemon):
    daemon = start_daemon({"replay": {"max_events_per_topic": 5000}})
    n_clients, n_events = 2000, 600
    topics = ["t0", "t1"]
    received: list[list[int]] = [[] for _ in range(n_clients)]
    clients = [
        await open_resumer(daemon, f"/events?topic={topics[i % 2]}", None, received[i])
        for i in range(n_clients)
    ]
    async with asyncio.timeout(60):
        for c in clients:
            await c.ready.wait()
    published: dict[str, list[int]] = {t: [] for t in topics}
    halfway = asyncio.Event()

    async def publish_all() -> None:
        async with AsyncPublisher(daemon.control) as pub:
            for n in range(n_events):
                topic = topics[n % 2]
                published[topic].append(int((await pub.publish(topic, n))["id"].rsplit("-", 1)[1]))
                if n == n_events // 3:
                    halfway.set()

    publisher = asyncio.create_task(publish_all())
    await halfway.wait()
    # Every connection drops in the same instant while publishing goes on.
    for c in clients:
        c.transport.abort()
    resumed = [
        await open_resumer(daemon, c.target, c.last_id, received[i]) for i, c in enumerate(clients)
    ]
    await publisher
    async with AsyncPublisher(daemon.control) as pub:
        await pub.broadcast(None, event="end")
    async with asyncio.timeout(90):
        for c in resumed:
            await c.end_seen.wait()
    lost = duplicated = 0
    for i in range(n_clients):
        want = published[topics[i % 2]]
        got = received[i]
        duplicated += len(got) - len(set(got))
        lost += len(set(want) - set(got))
        assert got == want
    assert (lost, duplicated) == (0, 0)
    stats = daemon.stats()
    assert stats["replays"] == n_clients
    assert stats["resets"] == 0
    assert not any(c.resets for c in resumed)
    for c in resumed:
        c.transport.close()


async def test_reset_for_stale_malformed_and_pre_restart_ids(start_daemon):
    daemon = start_daemon({"replay": {"max_events_per_topic": 2}})
    ids = [daemon.publish("a", n)["id"] for n in range(5)]

    async def first_events(last_id: str, n: int):
        client = await subscribe(
            daemon.host, daemon.port, "/events?topic=a", headers={"Last-Event-ID": last_id}
        )
        events = await client.events(n)
        await client.aclose()
        return events

    stale = await first_events(ids[0], 4)
    assert [e.event for e in stale] == ["reset", "connected", "message", "message"]
    assert stale[0].json()["reason"] == "stale"
    assert stale[0].json()["oldestId"] == ids[3]
    assert [e.json() for e in stale[2:]] == [3, 4]

    malformed = await first_events("not-an-id", 2)
    assert malformed[0].event == "reset"
    assert malformed[0].json()["reason"] == "malformed"

    daemon.stop()
    daemon.start()
    after_restart = await first_events(ids[-1], 2)
    assert after_restart[0].event == "reset"
    assert after_restart[0].json()["reason"] == "other-epoch"
    assert daemon.stats()["resets"] == 1


async def test_query_parameter_resume_for_clients_without_headers(daemon):
    first = daemon.publish("a", 1)["id"]
    daemon.publish("a", 2)
    client = await subscribe(daemon.host, daemon.port, f"/events?topic=a&lastEventId={first}")
    events = await client.events(2)
    assert [e.event for e in events] == ["connected", "message"]
    assert events[1].json() == 2
    assert daemon.stats()["replayed_events"] == 1
    await client.aclose()


async def test_latest_value_topic_gives_late_subscriber_current_state(start_daemon):
    daemon = start_daemon({"replay": {"latest_value_topics": ["progress:*"]}})
    for pct in (10, 50, 90):
        daemon.publish("progress:job1", {"progress": pct}, event="progress")
    daemon.publish("news", "not latest-value")
    late = await subscribe(daemon.host, daemon.port, "/events?topic=progress:job1&topic=news")
    connected, current = await late.events(2)
    assert connected.event == "connected"
    assert (current.event, current.json()) == ("progress", {"progress": 90})
    daemon.publish("progress:job1", {"progress": 100}, event="progress")
    assert (await late.next()).json() == {"progress": 100}
    await late.aclose()
