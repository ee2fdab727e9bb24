"""Publish → subscribers, against the real daemon on an ephemeral port."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from fanout.client import AsyncPublisher, Publisher, PublishError
from tests.sse_client import Response, request, subscribe

pytestmark = pytest.mark.integration


async def test_stream_head_and_first_frames(daemon):
    client = await subscribe(daemon.host, daemon.port, "/events?topic=a")
    assert client.headers["content-type"].startswith("text/event-stream")
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    assert client.headers["transfer-encoding"] == "chunked"
    connected = await client.next()
    assert connected.event == "connected"
    assert connected.id is not None
    assert client.retry == 3000
    info = connected.json()
    assert info["topics"] == ["a"]
    assert info["connection"]
    client.close()


async def test_publish_reaches_each_subscriber_of_its_topic_exactly_once(daemon):
    on_a = [await subscribe(daemon.host, daemon.port, "/events?topic=a") for _ in range(3)]
    on_ab = await subscribe(daemon.host, daemon.port, "/events?topic=a&topic=b")
    on_b = await subscribe(daemon.host, daemon.port, "/events?topic=b")
    for c in [*on_a, on_ab, on_b]:
        await c.next()  # connected
    results = [daemon.publish("a", {"n": n}, event="tick") for n in range(5)]
    assert [r["sent"] for r in results] == [4] * 5
    ids = [r["id"] for r in results]
    assert daemon.publish("b", {"n": "b"})["sent"] == 2
    for c in [*on_a, on_ab]:
        events = await c.events(5)
        assert [e.json() for e in events] == [{"n": n} for n in range(5)]
        assert [e.id for e in events] == ids
        assert {e.event for e in events} == {"tick"}
    assert (await on_ab.next()).json() == {"n": "b"}
    assert (await on_b.next()).json() == {"n": "b"}
    # Nothing more arrived for anyone: a marker broadcast is the next event everywhere.
    daemon.publisher.broadcast("end")
    for c in [*on_a, on_ab, on_b]:
        assert (await c.next()).json() == "end"
        c.close()


async def test_ids_increase_strictly(daemon):
    ids = [daemon.publish("t", n)["id"] for n in range(50)]
    seqs = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert seqs == sorted(set(seqs))
    assert len({i.rsplit("-", 1)[0] for i in ids}) == 1


async def test_http10_peer_gets_raw_body(daemon):
    client = await subscribe(daemon.host, daemon.port, "/events?topic=a", http10=True)
    assert not client.chunked
    assert client.headers.get("connection") == "close"
    await client.next()
    daemon.publish("a", "line1\nline2", event="x")
    daemon.publisher.publish("a", text="line1\r\nline2")
    assert (await client.next()).json() == "line1\nline2"
    assert (await client.next()).data == "line1\nline2"
    client.close()


async def test_targeted_delivery(start_daemon):
    daemon = start_daemon(
        {
            "listener": [{"tcp": "127.0.0.1:0", "trusted": True}],
            "auth": {"mode": "header"},
        }
    )
    h = {"X-Fanout-User": "alice"}
    alice1 = await subscribe(daemon.host, daemon.port, "/events?topic=a", headers=h)
    alice2 = await subscribe(daemon.host, daemon.port, "/events?topic=b", headers=h)
    bob = await subscribe(
        daemon.host, daemon.port, "/events?topic=a", headers={"X-Fanout-User": "bob"}
    )
    anon = await subscribe(daemon.host, daemon.port, "/events")
    first = (await alice1.next()).json()["connection"]
    for c in (alice2, bob, anon):
        await c.next()
    pub = daemon.publisher
    r = pub.broadcast({"all": 1}, event="hello")
    assert (r["sent"], r["total"]) == (4, 4)
    # `total` is always the daemon's open connections; `sent` those addressed.
    r = pub.notify("alice", {"for": "alice"})
    assert (r["sent"], r["total"]) == (2, 4)
    r = pub.send(first, {"for": "alice1"})
    assert (r["sent"], r["total"]) == (1, 4)
    r = pub.publish("a", {"for": "alice on a"}, user="alice")
    assert r["sent"] == 1
    assert pub.notify("nobody", 1)["sent"] == 0
    with pytest.raises(PublishError) as info:
        pub.send("no-such-connection", 1)
    assert info.value.status == 404
    pub.broadcast("end")
    got = {}
    for name, c in (("alice1", alice1), ("alice2", alice2), ("bob", bob), ("anon", anon)):
        events = []
        while True:
            e = await c.next()
            events.append(e.json())
            if e.json() == "end":
                break
        got[name] = events
        c.close()
    assert got["alice1"] == [
        {"all": 1},
        {"for": "alice"},
        {"for": "alice1"},
        {"for": "alice on a"},
        "end",
    ]
    assert got["alice2"] == [{"all": 1}, {"for": "alice"}, "end"]
    assert got["bob"] == [{"all": 1}, "end"]
    assert got["anon"] == [{"all": 1}, "end"]


async def test_ndjson_batch_publishes_all_in_order(daemon):
    client = await subscribe(daemon.host, daemon.port, "/events?topic=a&topic=b")
    await client.next()
    r = daemon.publisher.publish_many(
        [{"topic": "a", "data": 1}, {"topic": "b", "data": 2}, {"topic": "a", "text": "3"}]
    )
    assert r["published"] == 3
    assert r["sent"] == [1, 1, 1]
    events = await client.events(3)
    assert [e.data for e in events] == ["1", "2", "3"]
    assert [e.id for e in events] == r["ids"]
    client.close()


async def test_async_publisher_reuses_one_connection(daemon):
    client = await subscribe(daemon.host, daemon.port, "/events?topic=a")
    await client.next()
    async with AsyncPublisher(daemon.control) as pub:
        for n in range(20):
            await pub.publish("a", n)
        stats = await pub.stats()
    assert stats["published"] == 20
    assert [e.json() for e in await client.events(20)] == list(range(20))
    client.close()


def test_sync_publisher_survives_a_daemon_restart(daemon):
    pub = Publisher(daemon.control)
    assert pub.publish("a", 1)["sent"] == 0
    assert daemon.stop() == 0
    with pytest.raises(PublishError):
        pub.publish("a", 2)
    daemon.start()
    assert pub.publish("a", 3)["sent"] == 0
    pub.close()


def test_cli_publish_and_check_config(daemon):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fanout",
            "publish",
            "--socket",
            daemon.control,
            "--topic",
            "a",
            "--data",
            '{"x": 1}',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"sent":0' in out.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "fanout",
            "publish",
            "--socket",
            daemon.control,
            "--topic",
            "a b",
            "--data",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    assert "$.topic" in bad.stderr


async def test_stats_and_healthz(daemon):
    client = await subscribe(daemon.host, daemon.port, "/events?topic=a")
    await client.next()
    daemon.publish("a", 1)
    await client.next()
    stats = daemon.stats()
    assert stats["connections"] == 1
    assert stats["topics"] == 1
    assert stats["published"] == 1
    assert stats["delivered"] == 1
    for key in ("users", "dropped_slow", "refused", "evicted", "listeners", "epoch"):
        assert key in stats
    reader, writer = await asyncio.open_unix_connection(daemon.control)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    writer.close()
    client.close()


async def test_heartbeat_only_on_idle_streams(start_daemon):
    daemon = start_daemon({"stream": {"heartbeat_interval_s": 0.2}})
    client = await subscribe(daemon.host, daemon.port, "/events?topic=a")
    await client.next()
    await client.wait_comment(3, timeout=5)
    assert daemon.stats()["heartbeats"] >= 3
    client.close()


async def test_unknown_topic_is_fine_and_bad_request_status(daemon):
    r = await request(daemon.host, daemon.port, "/events?topic=bad%20topic")
    assert isinstance(r, Response)
    assert r.status == 400
    assert b"invalid topic" in r.body


async def test_prometheus_metrics(daemon):
    client = await subscribe(daemon.host, daemon.port, "/events?topic=a")
    await client.next()
    daemon.publish("a", 1)
    await client.next()
    await request(daemon.host, daemon.port, "/nope")
    reader, writer = await asyncio.open_unix_connection(daemon.control)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Type: text/plain; version=" in head
    text = body.decode()
    assert "fanout_published_total 1.0" in text
    assert "fanout_delivered_total 1.0" in text
    assert "fanout_connections 1.0" in text
    assert 'fanout_refused_total{status="404"} 1.0' in text
    await client.aclose()
