"""Publisher and AsyncPublisher against the real daemon: pipelining, batches, errors,
reconnecting."""

from __future__ import annotations

import asyncio

import pytest

from fanout.client import AsyncPublisher, Publisher, PublishError
from tests.sse_client import subscribe

pytestmark = pytest.mark.integration


async def test_concurrent_async_calls_are_pipelined_and_answered_in_order(daemon):
    client = await subscribe(daemon.host, daemon.port, "/events?topic=a")
    await client.next()
    async with AsyncPublisher(daemon.control) as pub:
        answers = await asyncio.gather(*(pub.publish("a", n) for n in range(200)))
        stats = await pub.stats()
    seqs = [int(a["id"].rsplit("-", 1)[1]) for a in answers]
    assert seqs == sorted(seqs)  # written in call order, matched in order
    assert all(a["sent"] == 1 for a in answers)
    assert stats["published"] == 200
    assert [e.json() for e in await client.events(200)] == list(range(200))
    client.close()


async def test_async_errors_do_not_desynchronise_the_connection(daemon):
    async with AsyncPublisher(daemon.control) as pub:
        results = await asyncio.gather(
            pub.publish("a", 1),
            pub.publish("bad topic", 2),
            pub.notify("", 3),
            pub.publish("a", 4),
            return_exceptions=True,
        )
    assert isinstance(results[0], dict)
    assert isinstance(results[1], PublishError)
    assert results[1].status == 400
    assert "$.topic" in results[1].message
    assert isinstance(results[2], PublishError)
    assert results[2].status == 404
    assert isinstance(results[3], dict)


async def test_async_publisher_survives_a_daemon_restart(daemon):
    pub = AsyncPublisher(daemon.control)
    assert (await pub.publish("a", 1))["sent"] == 0
    assert daemon.stop() == 0
    with pytest.raises(PublishError):
        await pub.publish("a", 2)
    daemon.start()
    assert (await pub.publish("a", 3))["sent"] == 0
    await pub.close()


def test_publish_many_is_one_request_all_or_none(daemon):
    with Publisher(daemon.control) as pub:
        answer = pub.publish_many([{"topic": "a", "data": i} for i in range(50)])
        assert answer["published"] == 50
        assert len(answer["ids"]) == 50
        with pytest.raises(PublishError) as info:
            pub.publish_many([{"topic": "a", "data": 1}, {"topic": "a", "dta": 2}])
        assert "line 2" in info.value.message
        assert pub.stats()["published"] == 50


def test_sync_publisher_keeps_one_connection(daemon):
    with Publisher(daemon.control) as pub:
        for n in range(100):
            pub.publish("a", n)
        sock = pub._sock
        pub.broadcast({"x": 1})
        assert pub._sock is sock
        assert pub.stats()["published"] == 101


def test_sync_publisher_without_daemon_says_where_it_looked(tmp_path):
    with pytest.raises(PublishError, match="cannot reach fanout"):
        Publisher(str(tmp_path / "none.sock")).publish("a", 1)


async def test_async_timeout_fails_every_call_in_flight_and_reconnects(short_tmp):
    # A peer that accepts and never answers: each call ends by its timeout, not a hang.
    path = str(short_tmp / "mute.sock")
    accepted: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_unix_server(mute, path)
    pub = AsyncPublisher(path, timeout=0.2)
    async with asyncio.timeout(5):
        results = await asyncio.gather(
            pub.publish("a", 1), pub.publish("a", 2), return_exceptions=True
        )
        assert all(isinstance(r, PublishError) for r in results)
        with pytest.raises(PublishError):
            await pub.publish("a", 3)
    assert len(accepted) == 2  # a fresh connection after the one that went out of step
    await pub.close()
    for writer in accepted:
        writer.close()
    server.close()
    await server.wait_closed()
