"""Several daemons through a real redis-server: one stream, the same ids everywhere."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from fanout.client import PublishError
from tests.conftest import wait_for
from tests.integration.test_resume import open_resumer
from tests.sse_client import Response, request, subscribe

pytestmark = pytest.mark.integration


class RedisServer:
    """A real redis-server on a Unix socket in a temp dir, started and stopped by pid."""

    def __init__(self, workdir: Path, persistent: bool) -> None:
        self.dir = workdir
        self.socket = workdir / "redis.sock"
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (tests/run.sh installs it)"
        args = [binary, "--port", "0", "--unixsocket", str(self.socket), "--dir", str(self.dir)]
        args += (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--save", ""]
        )
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.socket.exists, 10, "redis-server to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def redis_server(short_tmp):
    servers: list[RedisServer] = []

    def start(persistent: bool = False) -> RedisServer:
        workdir = short_tmp / f"redis{len(servers)}"
        workdir.mkdir()
        server = RedisServer(workdir, persistent).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def on_backplane(redis: RedisServer, **extra: object) -> dict[str, object]:
    return {"backplane": {"redis": redis.url, **extra.pop("backplane", {})}, **extra}  # type: ignore[dict-item]


async def test_an_event_published_on_one_daemon_arrives_on_all_with_one_id(
    start_daemon, redis_server
):
    redis = redis_server()
    daemons = [start_daemon(on_backplane(redis)) for _ in range(3)]
    clients = [await subscribe(d.host, d.port, "/events?topic=t") for d in daemons]
    for c in clients:
        await c.next()
    ids = [d.publish("t", f"from {i}")["id"] for i, d in enumerate(daemons)]
    for c in clients:
        events = await c.events(3)
        assert [e.id for e in events] == ids
        assert [e.json() for e in events] == ["from 0", "from 1", "from 2"]
        await c.aclose()


async def test_a_client_cut_from_one_daemon_resumes_on_another_without_loss(
    start_daemon, redis_server
):
    redis = redis_server()
    a, b = start_daemon(on_backplane(redis)), start_daemon(on_backplane(redis))
    seqs: list[int] = []
    client = await open_resumer(a, "/events?topic=t", None, seqs)
    await client.ready.wait()
    published = []
    for n in range(10):
        published.append(a.publish("t", n)["id"])
    await client.until(5)
    client.transport.abort()
    for n in range(10, 20):
        published.append((a if n % 2 else b).publish("t", n)["id"])
    resumed = await open_resumer(b, "/events?topic=t", client.last_id, seqs)
    b.publisher.broadcast(None, event="end")
    async with asyncio.timeout(10):
        await resumed.end_seen.wait()
    assert seqs == [int(i.rsplit("-", 1)[1]) for i in published]
    assert not resumed.resets
    resumed.transport.close()


async def test_resume_older_than_the_local_ring_is_served_from_the_stream(
    start_daemon, redis_server
):
    redis = redis_server()
    small = start_daemon(on_backplane(redis, replay={"max_events_per_topic": 2}))
    ids = [small.publish("t", n)["id"] for n in range(10)]
    wait_for(lambda: small.stats()["last_id"] == ids[-1], 10, "the daemon to read the stream")
    client = await subscribe(
        small.host, small.port, "/events?topic=t", headers={"Last-Event-ID": ids[0]}
    )
    events = await client.events(10)
    assert events[0].event == "connected"
    assert [e.json() for e in events[1:]] == list(range(1, 10))
    assert [e.id for e in events[1:]] == ids[1:]
    assert small.stats()["resets"] == 0
    await client.aclose()


async def test_per_user_limit_across_daemons_and_expiry_of_a_dead_daemon(
    start_daemon, redis_server
):
    redis = redis_server()
    config = on_backplane(
        redis,
        backplane={"user_ttl_s": 1.0},
        listener=[{"tcp": "127.0.0.1:0", "trusted": True}],
        auth={"mode": "header"},
        limits={"max_connections_per_user": 2},
    )
    a, b = start_daemon(config), start_daemon(config)
    h = {"X-Fanout-User": "carol"}
    on_a = await subscribe(a.host, a.port, "/events", headers=h)
    on_b = await subscribe(b.host, b.port, "/events", headers=h)
    for c in (on_a, on_b):
        await c.next()
    for d in (a, b):
        r = await request(d.host, d.port, "/events", headers=h)
        assert isinstance(r, Response)
        assert r.status == 429
    # A daemon that dies without a word: its connection stops counting after the TTL.
    b.stop(signal.SIGKILL)

    async def admitted() -> bool:
        r = await request(a.host, a.port, "/events", headers=h)
        if isinstance(r, Response):
            return False
        await r.aclose()
        return True

    # Bounded retries, each a real request: the TTL is a wall-clock expiry in Redis.
    for _ in range(50):
        if await admitted():
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the dead daemon's connection still counts")
    await on_a.aclose()
    on_b.abort()


async def test_redis_down_then_back_empty_fails_publishes_and_resets_resumes(
    start_daemon, redis_server
):
    redis = redis_server()
    a, b = start_daemon(on_backplane(redis)), start_daemon(on_backplane(redis))
    seqs: list[int] = []
    client = await open_resumer(a, "/events?topic=t", None, seqs)
    await client.ready.wait()
    first = b.publish("t", "before")["id"]
    await client.until(1)
    redis.stop()
    with pytest.raises(PublishError) as info:
        a.publish("t", "lost?")
    assert info.value.status == 503
    assert "nothing was published" in info.value.message
    # Redis comes back without the stream: the daemons start a new epoch and send
    # their clients away; a client resuming with its old id is told, not fooled.
    redis.start()
    async with asyncio.timeout(20):
        await client.gone.wait()
    resumed = await open_resumer(a, "/events?topic=t", client.last_id, seqs)
    async with asyncio.timeout(10):
        await resumed.ready.wait()
    assert resumed.resets == [first]
    after = b.publish("t", "after")["id"]
    await resumed.until(2)
    assert seqs[-1] == int(after.rsplit("-", 1)[1])
    resumed.transport.close()


async def test_redis_restart_with_its_data_keeps_streams_without_a_gap(start_daemon, redis_server):
    redis = redis_server(persistent=True)
    a, b = start_daemon(on_backplane(redis)), start_daemon(on_backplane(redis))
    seqs: list[int] = []
    client = await open_resumer(a, "/events?topic=t", None, seqs)
    await client.ready.wait()
    ids = [b.publish("t", 1)["id"]]
    redis.stop()
    redis.start()
    wait_for(lambda: _publish_ok(b, ids), 20, "publishing to work again")
    ids.append(b.publish("t", 3)["id"])
    await client.until(len(ids))
    assert seqs == [int(i.rsplit("-", 1)[1]) for i in ids]
    assert not client.gone.is_set()
    client.transport.close()


def _publish_ok(daemon, ids: list[str]) -> bool:
    try:
        ids.append(daemon.publish("t", 2)["id"])
    except PublishError:
        return False
    return True


async def test_a_killed_daemon_does_not_affect_the_others(start_daemon, redis_server):
    redis = redis_server()
    a, b, c = (start_daemon(on_backplane(redis)) for _ in range(3))
    clients = [await subscribe(d.host, d.port, "/events?topic=t") for d in (a, b)]
    for cl in clients:
        await cl.next()
    c.stop(signal.SIGKILL)
    a.publish("t", "still here")
    for cl in clients:
        assert (await cl.next()).json() == "still here"
        await cl.aclose()


async def test_a_daemon_that_loaded_nothing_resumes_old_ids_from_the_stream(
    start_daemon, redis_server
):
    redis = redis_server()
    first = start_daemon(on_backplane(redis))
    ids = [first.publish("t", n)["id"] for n in range(5)]
    # Started after those events, with none of them in its rings.
    late = start_daemon(on_backplane(redis, backplane={"load_on_start": 0}))
    client = await subscribe(
        late.host, late.port, "/events?topic=t", headers={"Last-Event-ID": ids[0]}
    )
    events = await client.events(5)
    assert [e.event for e in events] == ["connected", "message", "message", "message", "message"]
    assert [e.id for e in events[1:]] == ids[1:]
    await client.aclose()
