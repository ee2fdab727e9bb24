"""workers = N: one control socket, several processes holding the subscribers."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from fanout.client import AsyncPublisher
from tests.conftest import wait_for
from tests.integration.test_resume import open_resumer
from tests.sse_client import Response, request, subscribe

pytestmark = pytest.mark.integration

WORKERS = {"workers": 2}


class Marks(asyncio.Protocol):
    """Counts how often each broadcast marker arrives on one connection."""

    def __init__(self, done: asyncio.Event, total: list[int], n: int) -> None:
        self.buf = b""
        self.seen: dict[str, int] = {}
        self.done, self.total, self.n = done, total, n
        self.ready = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(b"GET /events?topic=x HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"event: connected" in self.buf:
            self.ready.set()
        for mark in ("one", "end"):
            token = f'data: "{mark}"'.encode()
            while token in self.buf:
                self.seen[mark] = self.seen.get(mark, 0) + 1
                self.buf = self.buf.replace(token, b"", 1)
                if mark == "end":
                    self.total.append(1)
                    if len(self.total) == self.n:
                        self.done.set()


async def test_two_workers_serve_a_broadcast_exactly_once(start_daemon):
    daemon = start_daemon(WORKERS)
    loop = asyncio.get_running_loop()
    n = 200
    done, total = asyncio.Event(), []
    protos = []
    for _ in range(n):
        _, proto = await loop.create_connection(
            lambda: Marks(done, total, n), daemon.host, daemon.port
        )
        protos.append(proto)
    async with asyncio.timeout(30):
        for p in protos:
            await p.ready.wait()
    stats = daemon.stats()
    assert stats["connections"] == n
    per_worker = [w["connections"] for w in stats["workers"]]
    assert len(per_worker) == 2
    assert sum(per_worker) == n
    assert min(per_worker) > 0, f"the kernel gave one worker nothing: {per_worker}"
    r = daemon.publisher.broadcast("one")
    assert (r["sent"], r["total"]) == (n, n)
    daemon.publisher.broadcast("end")
    async with asyncio.timeout(30):
        await done.wait()
    assert all(p.seen == {"one": 1, "end": 1} for p in protos)
    assert daemon.stats()["delivered"] == 2 * n
    for p in protos:
        p.transport.close()


async def test_per_user_limits_hold_across_workers(start_daemon):
    daemon = start_daemon(
        {
            **WORKERS,
            "listener": [{"tcp": "127.0.0.1:0", "trusted": True}],
            "auth": {"mode": "header"},
            "limits": {"max_connections_per_user": 3},
        }
    )
    headers = {"X-Fanout-User": "alice"}
    kept = []
    refused = 0
    # Ten tries land on both workers; only three may be open at once in total.
    for _ in range(10):
        r = await request(daemon.host, daemon.port, "/events", headers=headers)
        if isinstance(r, Response):
            assert r.status == 429
            refused += 1
        else:
            kept.append(r)
    assert (len(kept), refused) == (3, 7)
    assert daemon.stats()["refused"] == {"429": 7}
    for c in kept:
        await c.aclose()
    wait_for(lambda: daemon.stats()["connections"] == 0, 10, "connections to close")
    again = await subscribe(daemon.host, daemon.port, "/events", headers=headers)
    await again.aclose()


async def test_evict_oldest_across_workers(start_daemon):
    daemon = start_daemon(
        {
            **WORKERS,
            "listener": [{"tcp": "127.0.0.1:0", "trusted": True}],
            "auth": {"mode": "header"},
            "limits": {"max_connections_per_user": 1, "per_user_policy": "evict-oldest"},
        }
    )
    headers = {"X-Fanout-User": "bob"}
    clients = []
    for _ in range(4):
        c = await subscribe(daemon.host, daemon.port, "/events", headers=headers)
        await c.next()
        clients.append(c)
    for old in clients[:-1]:
        assert [e.event for e in await old.until_closed(10)] == ["evicted"]
    assert daemon.stats()["evicted"] == 3
    daemon.publisher.notify("bob", "hi")
    assert (await clients[-1].next()).json() == "hi"
    await clients[-1].aclose()


async def test_killed_worker_is_restarted_and_its_clients_resume_without_loss(start_daemon):
    daemon = start_daemon(WORKERS)
    n_clients, n_events = 100, 300
    received: list[list[int]] = [[] for _ in range(n_clients)]
    current = [
        await open_resumer(daemon, "/events?topic=t", None, received[i]) for i in range(n_clients)
    ]
    async with asyncio.timeout(30):
        for c in current:
            await c.ready.wait()
    before = daemon.stats()
    victim = before["workers"][0]
    assert victim["connections"] > 0
    stopping = False

    async def stay_connected(i: int) -> None:
        # What EventSource does: when the stream ends, come back with the last id,
        # and retry a connect that fails (one that landed in the dead worker's
        # accept queue is reset by the kernel).
        while True:
            await current[i].gone.wait()
            if stopping:
                return
            for _ in range(100):
                try:
                    current[i] = await open_resumer(
                        daemon, "/events?topic=t", current[i].last_id, received[i]
                    )
                    break
                except ConnectionError:
                    await asyncio.sleep(0.05)  # the client's retry delay

    watchers = [asyncio.create_task(stay_connected(i)) for i in range(n_clients)]
    published: list[int] = []
    try:
        async with AsyncPublisher(daemon.control) as pub:
            for n in range(n_events):
                published.append(int((await pub.publish("t", n))["id"].rsplit("-", 1)[1]))
                if n == n_events // 3:
                    os.kill(victim["pid"], signal.SIGKILL)
            wait_for(
                lambda: (
                    len(daemon.stats()["workers"]) == 2 and daemon.stats()["worker_restarts"] == 1
                ),
                20,
                "the worker to be restarted",
            )
            await pub.broadcast(None, event="end")
        async with asyncio.timeout(60):
            for i in range(n_clients):
                # current[i] may be replaced by a reconnect while we wait.
                while not current[i].end_seen.is_set():
                    waiter = asyncio.ensure_future(current[i].end_seen.wait())
                    await asyncio.wait([waiter], timeout=0.5)
                    waiter.cancel()
    finally:
        stopping = True
        for w in watchers:
            w.cancel()
        for c in current:
            c.transport.close()
    for i in range(n_clients):
        assert received[i] == published, f"client {i} lost or doubled events"
        assert not current[i].resets
    after = daemon.stats()
    assert len(after["workers"]) == 2
    assert victim["pid"] not in [w["pid"] for w in after["workers"]]
    assert after["replays"] >= victim["connections"]


async def test_sigterm_drains_every_worker(start_daemon):
    daemon = start_daemon(WORKERS)
    clients = [await subscribe(daemon.host, daemon.port, "/events?topic=a") for _ in range(20)]
    for c in clients:
        await c.next()
    assert all(w["connections"] > 0 for w in daemon.stats()["workers"])
    daemon.send_signal(signal.SIGTERM)
    for c in clients:
        await c.until_closed(15)
        assert c.ended
    assert daemon.proc.wait(20) == 0
    assert not os.path.exists(daemon.control)  # noqa: ASYNC240 - the daemon is gone


def test_sighup_reaches_every_worker(start_daemon):
    daemon = start_daemon({**WORKERS, "limits": {"max_connections": 100}})
    text = daemon.config_path.read_text().replace("max_connections = 100", "max_connections = 1")
    daemon.config_path.write_text(text)
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.log.count("reloaded") >= 3, 10, "supervisor and both workers to reload")
    assert "[w1]" in daemon.log
    assert "[w2]" in daemon.log


def test_a_worker_exits_when_its_supervisor_dies(start_daemon):
    daemon = start_daemon(WORKERS)
    pids = [w["pid"] for w in daemon.stats()["workers"]]
    daemon.stop(signal.SIGKILL)  # no drain, no word to the workers

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie (exited, not yet reaped by init) has gone too.
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")

    wait_for(lambda: all(gone(p) for p in pids), 20, "orphaned workers to exit")
