"""Workers and the backplane together, against a real redis-server: two daemons with
two workers each share one stream, one id space and one count per user."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.conftest import wait_for
from tests.integration.test_backplane import on_backplane, redis_server  # noqa: F401
from tests.integration.test_reload import rewrite
from tests.integration.test_resume import open_resumer
from tests.sse_client import Response, request, subscribe

pytestmark = pytest.mark.integration


def seq(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


async def test_clients_resume_on_any_worker_of_any_daemon_with_zero_loss(
    start_daemon,
    redis_server,  # noqa: F811
):
    redis = redis_server()
    config = on_backplane(redis, workers=2, replay={"max_events_per_topic": 4})
    a, b = start_daemon(config), start_daemon(config)
    n = 16
    received: list[list[int]] = [[] for _ in range(n)]
    clients = [await open_resumer(a, "/events?topic=t", None, received[i]) for i in range(n)]
    async with asyncio.timeout(20):
        for c in clients:
            await c.ready.wait()
    published = [seq((a if k % 2 else b).publish("t", k)["id"]) for k in range(6)]
    async with asyncio.timeout(20):
        for c in clients:
            await c.until(6)
    # Every client is cut from daemon A; events go on from both daemons meanwhile,
    # more of them than a ring holds, so the supervisor of B reads the rest back
    # from the stream for whichever of its workers the client lands on.
    for c in clients:
        c.transport.abort()
    published += [seq((a if k % 2 else b).publish("t", k)["id"]) for k in range(6, 16)]
    wait_for(lambda: b.stats()["last_id"].endswith(f"-{published[-1]}"), 10, "B to read on")
    resumed = [
        await open_resumer(b, "/events?topic=t", c.last_id, received[i])
        for i, c in enumerate(clients)
    ]
    async with asyncio.timeout(20):
        for c in resumed:
            await c.ready.wait()
    per_worker = [w["connections"] for w in b.stats()["workers"]]
    assert sorted(per_worker) != [0, n], f"all resumed on one worker: {per_worker}"
    published.append(seq(a.publisher.broadcast(None, event="end")["id"]))
    async with asyncio.timeout(20):
        for c in resumed:
            await c.end_seen.wait()
    for got in received:
        assert got == published[:-1]
    assert not any(c.resets for c in resumed)
    assert b.stats()["resets"] == 0
    for c in resumed:
        c.transport.close()


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_reloaded_per_user_limit_holds_on_every_daemon(
    start_daemon,
    redis_server,  # noqa: F811
    workers,
):
    redis = redis_server()
    config = on_backplane(
        redis,
        workers=workers,
        listener=[{"tcp": "127.0.0.1:0", "trusted": True}],
        auth={"mode": "header"},
        limits={"max_connections_per_user": 2},
    )
    a, b = start_daemon(config), start_daemon(config)
    h = {"X-Fanout-User": "carol"}
    held = [await subscribe(a.host, a.port, "/events", headers=h)]
    held.append(await subscribe(b.host, b.port, "/events", headers=h))
    for c in held:
        await c.next()
    for d in (a, b):
        r = await request(d.host, d.port, "/events", headers=h)
        assert isinstance(r, Response)
        assert r.status == 429
    # The limit is raised to 3 on both daemons: one more is admitted, on either.
    for d in (a, b):
        rewrite(d, {"limits": {"max_connections_per_user": 3}})
        before = d.log.count("reloaded")
        d.send_signal(signal.SIGHUP)
        wait_for(lambda d=d, before=before: d.log.count("reloaded") > before, 10, "reload")
    third = await request(b.host, b.port, "/events", headers=h)
    assert not isinstance(third, Response), "the new limit is not in force on daemon B"
    held.append(third)
    await third.next()
    for d in (a, b):
        r = await request(d.host, d.port, "/events", headers=h)
        assert isinstance(r, Response)
        assert r.status == 429
    for c in held:
        await c.aclose()


async def test_evict_oldest_reaches_a_worker_of_another_daemon(
    start_daemon,
    redis_server,  # noqa: F811
):
    redis = redis_server()
    config = on_backplane(
        redis,
        workers=2,
        listener=[{"tcp": "127.0.0.1:0", "trusted": True}],
        auth={"mode": "header"},
        limits={"max_connections_per_user": 1, "per_user_policy": "evict-oldest"},
    )
    a, b = start_daemon(config), start_daemon(config)
    h = {"X-Fanout-User": "dave"}
    old = await subscribe(a.host, a.port, "/events", headers=h)
    await old.next()
    new = await subscribe(b.host, b.port, "/events", headers=h)
    await new.next()
    last = await old.next()
    assert last.event == "evicted"
    wait_for(lambda: a.stats()["connections"] == 0, 10, "A to let the evicted one go")
    assert b.stats()["connections"] == 1
    await old.aclose()
    await new.aclose()
