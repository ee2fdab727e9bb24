"""Per-user limits, the global cap, and who may set the identity header."""

from __future__ import annotations

import pytest

from tests.sse_client import Response, request, subscribe

pytestmark = pytest.mark.integration

HEADER_AUTH = {
    "listener": [{"tcp": "127.0.0.1:0", "trusted": True}],
    "auth": {"mode": "header"},
}


def user(name: str) -> dict[str, str]:
    return {"X-Fanout-User": name}


async def test_per_user_reject_answers_429_with_retry_after(start_daemon):
    daemon = start_daemon(
        {**HEADER_AUTH, "limits": {"max_connections_per_user": 2, "retry_after_s": 7}}
    )
    kept = [
        await subscribe(daemon.host, daemon.port, "/events", headers=user("u")) for _ in range(2)
    ]
    r = await request(daemon.host, daemon.port, "/events", headers=user("u"))
    assert isinstance(r, Response)
    assert r.status == 429
    assert r.headers["retry-after"] == "7"
    assert b"too many connections for this user" in r.body
    other = await subscribe(daemon.host, daemon.port, "/events", headers=user("v"))
    assert daemon.stats()["refused"] == {"429": 1}
    assert "refused 127.0.0.1" in daemon.log
    assert "429 too many connections" in daemon.log
    for c in [*kept, other]:
        c.close()


async def test_evict_oldest_tells_the_old_connection_why(start_daemon):
    daemon = start_daemon(
        {
            **HEADER_AUTH,
            "limits": {"max_connections_per_user": 2, "per_user_policy": "evict-oldest"},
        }
    )
    first = await subscribe(daemon.host, daemon.port, "/events", headers=user("u"))
    second = await subscribe(daemon.host, daemon.port, "/events", headers=user("u"))
    await first.next()
    await second.next()
    third = await subscribe(daemon.host, daemon.port, "/events", headers=user("u"))
    await third.next()
    events = await first.until_closed()
    assert [e.event for e in events] == ["evicted"]
    assert "newer connection" in events[0].json()["reason"]
    daemon.publisher.notify("u", "still here")
    assert (await second.next()).json() == "still here"
    assert (await third.next()).json() == "still here"
    assert daemon.stats()["evicted"] == 1
    second.close()
    third.close()


async def test_global_cap_answers_503(start_daemon):
    daemon = start_daemon({"limits": {"max_connections": 3}})
    kept = [await subscribe(daemon.host, daemon.port, "/events") for _ in range(3)]
    for c in kept:
        await c.next()
    r = await request(daemon.host, daemon.port, "/events")
    assert isinstance(r, Response)
    assert r.status == 503
    assert b"server full" in r.body
    assert "retry-after" in r.headers
    await kept[0].aclose()
    daemon.wait_connections(2)
    replacement = await subscribe(daemon.host, daemon.port, "/events")
    for c in [*kept[1:], replacement]:
        c.close()


async def test_identity_header_is_trusted_only_on_trusted_listener(start_daemon):
    daemon = start_daemon(
        {
            "listener": [
                {"tcp": "127.0.0.1:0", "trusted": False},
                {"unix": "pub.sock", "trusted": True},
            ],
            "auth": {"mode": "header", "allow_anonymous": False},
        }
    )
    r = await request(daemon.host, daemon.port, "/events", headers=user("mallory"))
    assert isinstance(r, Response)
    assert r.status == 403
    r = await request(daemon.host, daemon.port, "/events")
    assert isinstance(r, Response)
    assert r.status == 401
    assert any(u.endswith("pub.sock") for u in daemon.stats()["listeners"])
