"""The live ops page (/ops, [ops] enabled = true) in headless Chromium, and its feed.

The daemon's ops publisher puts the /stats snapshot on the `fanout:ops` topic every
interval; the page follows it with fanout.js. The test makes real traffic (extra
subscribers, a burst of events, refused requests, a stalled reader that gets cut) and
waits for the page to show each, then keeps a screenshot in test-artifacts/ops.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Daemon
from tests.integration.test_browser import ARTIFACTS, Driver, text, wait
from tests.integration.test_browser import driver as driver  # the shared fixture
from tests.sse_client import subscribe

pytestmark = pytest.mark.integration

INTERVAL_S = 0.2


def ops_config(**extra: Any) -> dict[str, Any]:
    return {"ops": {"enabled": True, "interval_s": INTERVAL_S}, **extra}


def get(daemon: Daemon, target: str) -> int:
    conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=5)
    try:
        conn.request("GET", target)
        return conn.getresponse().status
    finally:
        conn.close()


@contextlib.contextmanager
def streams(daemon: Daemon, n: int, topic: str) -> Iterator[list[socket.socket]]:
    """n subscribers on raw sockets (each reads nothing: the test sends them little)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection((daemon.host, daemon.port), timeout=5)
            s.sendall(f"GET /events?topic={topic} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def ops_state(driver: Driver) -> dict[str, Any]:
    state: dict[str, Any] = driver.execute_script(
        "const o = window.fanoutOps; return {samples: o.samples, rates: o.rates}"
    )
    return state


def number(driver: Driver, css: str) -> float:
    value = text(driver, css).replace(",", "")
    return float(value) if value.replace(".", "").isdigit() else -1.0


def test_ops_page_shows_live_traffic(start_daemon: Callable[..., Daemon], driver: Driver) -> None:
    daemon = start_daemon(
        ops_config(limits={"max_buffered_bytes": 65536, "socket_send_buffer_bytes": 65536})
    )
    driver.get(f"http://{daemon.host}:{daemon.port}/ops")
    wait(driver, lambda d: text(d, "#state") == "open", "the page to connect")
    wait(driver, lambda d: len(ops_state(d)["rates"]) >= 1, "two snapshots")
    wait(driver, lambda d: text(d, "#connections") == "1", "the page's own connection")
    stats = daemon.stats()
    assert text(driver, "#who") == f"fanout {stats['version']} · pid {stats['pid']}"

    with streams(daemon, 3, "load"):
        daemon.wait_connections(4)
        wait(driver, lambda d: text(d, "#connections") == "4", "4 connections")

        # A burst: the published and delivered totals and rates follow.
        before = daemon.stats()
        for n in range(150):
            daemon.publish("load", {"n": n}, event="tick")
        wait(
            driver,
            lambda d: number(d, "#published-total") >= before["published"] + 150,
            "the published total",
        )
        wait(
            driver,
            lambda d: number(d, "#delivered-total") >= before["delivered"] + 450,
            "the delivered total",
        )

    # Each rate shown is the difference of the last two snapshots over their times.
    state = ops_state(driver)
    last, prev = state["samples"][-1], state["samples"][-2]
    expected = (last["stats"]["published"] - prev["stats"]["published"]) / (last["at"] - prev["at"])
    assert state["rates"][-1]["published"] == pytest.approx(expected)

    # Refusals, by status (the page asks for no favicon, so these are the only ones).
    assert get(daemon, "/nope") == 404
    assert get(daemon, "/events?topic=bad%20topic") == 400
    assert daemon.stats()["refused"] == {"400": 1, "404": 1}
    wait(driver, lambda d: text(d, "#refused-total") == "2", "two refusals")
    row = '#refused-by-status tr[data-status="404"]'
    assert "no such path" in text(driver, row)
    assert text(driver, f"{row} .n") == "1"

    # A reader that stops reading is cut: the drop shows.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((daemon.host, daemon.port))
    stalled.sendall(b"GET /events?topic=big HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        daemon.wait_connections(2)
        for _ in range(400):  # bounded: ~6 MB, far more than the stalled socket holds
            daemon.publish("big", "x" * 16_000)
            if daemon.stats()["dropped_slow"]:
                break
        assert daemon.stats()["dropped_slow"] == 1
        wait(driver, lambda d: text(d, "#dropped-total") == "1", "the drop")
    finally:
        stalled.close()

    # Some quiet snapshots so the sparklines show the burst as a peak, then keep a picture.
    wait(driver, lambda d: len(ops_state(d)["rates"]) >= 12, "a few more snapshots")
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "ops.png"))


def test_ops_page_adds_up_daemons_sharing_the_topic(
    start_daemon: Callable[..., Daemon], driver: Driver
) -> None:
    # Hosts on one Redis backplane all publish to fanout:ops. Here the test plays a
    # second daemon by publishing its snapshots: the page must add the two up, not
    # take differences between their counters, and drop the other once it goes quiet.
    daemon = start_daemon(ops_config())
    driver.get(f"http://{daemon.host}:{daemon.port}/ops")
    wait(driver, lambda d: text(d, "#connections") == "1", "the page's own connection")

    def other(published: int) -> float:
        at = time.time()
        stats = daemon.stats() | {"pid": 4242, "connections": 10, "published": published}
        snapshot = {"at": at, "interval_s": INTERVAL_S, "source": "host-b/4242", "stats": stats}
        daemon.publish("fanout:ops", snapshot, event="stats")
        return at

    first = other(1000)
    wait(driver, lambda d: text(d, "#connections") == "11", "both daemons' connections")
    assert text(driver, "#who").startswith("2 daemons · pids ")
    second = other(1100)
    other_rate = 100 / (second - first)

    def published_rate(d: Driver) -> float:
        last = ops_state(d)["rates"][-1:]
        return float(last[0]["published"] or 0) if last else 0.0

    wait(driver, lambda d: published_rate(d) >= other_rate, "the rates added up")
    # Silent for 3 intervals: gone from the sums.
    wait(driver, lambda d: text(d, "#connections") == "1", "the other daemon to drop out")
    assert text(driver, "#who").startswith("fanout ")


async def test_ops_topic_carries_the_stats_snapshot(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(ops_config())
    client = await subscribe(daemon.host, daemon.port, "/events?topic=fanout:ops")
    try:
        events = [e for e in await client.events(4) if e.event == "stats"]
        assert len(events) >= 2
        first, second = (e.json() for e in events[-2:])
        assert isinstance(first, dict)
        assert isinstance(second, dict)
        assert first["interval_s"] == INTERVAL_S
        assert second["at"] > first["at"]
        # Each snapshot counts the one before it among the published events.
        assert second["stats"]["published"] > first["stats"]["published"]
        assert set(daemon.stats()) == set(second["stats"])
        assert second["stats"]["connections"] == 1  # this subscriber
    finally:
        await client.aclose()


async def test_ops_page_is_off_by_default(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    status = await asyncio.to_thread(get, daemon, "/ops")
    assert status == 404


async def test_ops_with_workers(start_daemon: Callable[..., Daemon]) -> None:
    # Every worker serves /ops; the first one's publisher feeds all of them.
    daemon = start_daemon(ops_config(workers=2))
    for _ in range(4):  # new connections land on either worker
        assert await asyncio.to_thread(get, daemon, "/ops") == 200
    client = await subscribe(daemon.host, daemon.port, "/events?topic=fanout:ops")
    try:
        events = [e for e in await client.events(3) if e.event == "stats"]
        snapshot = events[-1].json()
        assert isinstance(snapshot, dict)
        assert snapshot["stats"]["connections"] >= 1
    finally:
        await client.aclose()
