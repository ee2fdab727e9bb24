"""Who may read what, against the real daemon: tokens signed here by PyJWT, grants, CORS."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, wait_for
from tests.jwt_keys import Signer, grants, write_jwks
from tests.sse_client import Response, SSEClient, request, subscribe

pytestmark = pytest.mark.integration

APP = "http://127.0.0.1:5173"


class Keys:
    """One key of each kind, in the three kinds of key file."""

    def __init__(self, where: Path) -> None:
        self.hs = Signer.new("HS256")
        self.rs = Signer.new("RS256")
        self.es = Signer.new("ES256")
        self.ed = Signer.new("EdDSA", kid="ed-1")
        self.secret = self.hs.write(where / "secret")
        self.pems = [self.rs.write(where / "rs.pem"), self.es.write(where / "es.pem")]
        self.jwks = write_jwks(where / "jwks.json", self.ed)

    def jwt(self, **extra: Any) -> dict[str, Any]:
        return {
            "secret_file": str(self.secret),
            "public_key_files": [str(p) for p in self.pems],
            "jwks_file": str(self.jwks),
            **extra,
        }


def jwt_config(keys: Keys, auth: dict[str, Any] | None = None, **jwt: Any) -> dict[str, Any]:
    return {
        "auth": {"mode": "jwt", "allow_anonymous": False, **(auth or {}), "jwt": keys.jwt(**jwt)}
    }


def refusals(daemon: Daemon, status: int) -> int:
    return int(daemon.stats()["refused"].get(str(status), 0))


async def get(daemon: Daemon, target: str, headers: dict[str, str] | None = None) -> Any:
    return await request(daemon.host, daemon.port, target, headers=headers)


async def raw(daemon: Daemon, head: str) -> bytes:
    """A request written as given (for duplicate headers), and the whole answer."""
    reader, writer = await asyncio.open_connection(daemon.host, daemon.port)
    writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    return answer


async def test_each_algorithm_streams_its_granted_topic(
    start_daemon: Callable[..., Daemon], short_tmp: Path
) -> None:
    keys = Keys(short_tmp)
    daemon = start_daemon(jwt_config(keys))
    streams: dict[str, SSEClient] = {}
    for signer in (keys.hs, keys.rs, keys.es, keys.ed):
        token = signer.token(grants("orders", "user:{user}:*"), sub=f"u-{signer.algorithm}")
        target = f"/events?topic=orders&topic=user:u-{signer.algorithm}:inbox"
        stream = await subscribe(
            daemon.host, daemon.port, target, headers={"Authorization": f"Bearer {token}"}
        )
        connected = await stream.next()
        assert connected.event == "connected"
        assert connected.json()["user"] == f"u-{signer.algorithm}"  # type: ignore[index]
        streams[signer.algorithm] = stream
    daemon.publish("orders", {"n": 1})
    daemon.publish("user:u-EdDSA:inbox", {"to": "ed"})
    for algorithm, stream in streams.items():
        event = await stream.next()
        assert event.json() == {"n": 1}, algorithm
    assert (await streams["EdDSA"].next()).json() == {"to": "ed"}
    for stream in streams.values():
        await stream.aclose()


async def test_refusals_are_401_or_403_with_a_reason_and_logged_once(
    start_daemon: Callable[..., Daemon], short_tmp: Path
) -> None:
    keys = Keys(short_tmp)
    daemon = start_daemon(jwt_config(keys, audience="fanout"))
    good = {"aud": "fanout"}
    cases = [
        (keys.es.token(grants("orders"), exp=int(time.time()) - 600, **good), 401, "token expired"),
        (Signer.new("ES256").token(grants("orders"), **good), 401, "bad signature"),
        (keys.rs.token(grants("orders"), aud="other"), 401, "wrong audience"),
        (keys.hs.token(grants("orders")), 401, "missing aud claim"),
        ("garbage", 401, "malformed token"),
        (Signer.new("EdDSA", kid="ed-2").token(**good), 401, "unknown key id"),
    ]
    for token, status, reason in cases:
        answer = await get(daemon, "/events?topic=orders", {"Authorization": f"Bearer {token}"})
        assert isinstance(answer, Response)
        assert answer.status == status
        assert answer.body.decode() == f"invalid token: {reason}\n"
        assert answer.headers["www-authenticate"] == (
            f'Bearer realm="fanout", error="invalid_token", error_description="{reason}"'
        )
        assert keys.hs.public.decode() not in answer.body.decode()
    # A good token for other topics: 403 naming them.
    token = keys.ed.token(grants("orders", "user:{user}:*"), **good)
    answer = await get(
        daemon,
        "/events?topic=orders&topic=user:bob:inbox&topic=payroll",
        {"Authorization": f"Bearer {token}"},
    )
    assert isinstance(answer, Response)
    assert answer.status == 403
    assert answer.body == b"not allowed to subscribe to: payroll, user:bob:inbox\n"
    assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    # No token at all.
    answer = await get(daemon, "/events?topic=orders")
    assert isinstance(answer, Response)
    assert (answer.status, answer.headers["www-authenticate"]) == (401, 'Bearer realm="fanout"')

    assert refusals(daemon, 401) == len(cases) + 1
    assert refusals(daemon, 403) == 1
    log = wait_for(
        lambda: daemon.log if daemon.log.count("refused ") >= len(cases) + 2 else None,
        what="every refusal in the log",
    )
    for _, _, reason in cases:
        assert log.count(f"401 invalid token: {reason}") == 1, reason
    assert log.count("403 not allowed to subscribe to: payroll, user:bob:inbox") == 1
    assert "INFO" in log.split("invalid token: bad signature")[0].rsplit("\n", 1)[-1]
    assert keys.hs.public.decode() not in log


async def test_cookie_and_query_tokens(
    start_daemon: Callable[..., Daemon], short_tmp: Path
) -> None:
    keys = Keys(short_tmp)
    daemon = start_daemon(jwt_config(keys, cookie="fanout_token", query_token=True))
    token = keys.es.token(grants("t"))
    by_cookie = await subscribe(
        daemon.host,
        daemon.port,
        "/events?topic=t",
        headers={"Cookie": f"a=1; fanout_token={token}"},
    )
    by_query = await subscribe(daemon.host, daemon.port, f"/events?topic=t&token={token}")
    for stream in (by_cookie, by_query):
        assert (await stream.next()).json()["user"] == "alice"  # type: ignore[index]
    daemon.publish("t", "hello")
    for stream in (by_cookie, by_query):
        assert (await stream.next()).data == '"hello"'
        await stream.aclose()


async def test_query_token_is_refused_unless_enabled(
    start_daemon: Callable[..., Daemon], short_tmp: Path
) -> None:
    keys = Keys(short_tmp)
    daemon = start_daemon(jwt_config(keys))
    answer = await get(daemon, f"/events?topic=t&token={keys.es.token(grants('t'))}")
    assert isinstance(answer, Response)
    assert answer.status == 401
    assert b"not enabled" in answer.body


async def test_jwt_mode_in_two_workers(
    start_daemon: Callable[..., Daemon], short_tmp: Path
) -> None:
    keys = Keys(short_tmp)
    daemon = start_daemon({**jwt_config(keys), "workers": 2})
    token = keys.rs.token(grants("t"))
    streams = [
        await subscribe(
            daemon.host,
            daemon.port,
            "/events?topic=t",
            headers={"Authorization": f"Bearer {token}"},
        )
        for _ in range(4)
    ]
    refused = await get(daemon, "/events?topic=u", {"Authorization": f"Bearer {token}"})
    assert isinstance(refused, Response)
    assert refused.status == 403
    daemon.wait_connections(4)
    daemon.publish("t", 1)
    for stream in streams:
        await stream.next()  # connected
        assert (await stream.next()).data == "1"
        await stream.aclose()


async def test_config_grants_in_the_default_mode(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon({"auth": {"grants": ["news", "public:*"]}})
    stream = await subscribe(daemon.host, daemon.port, "/events?topic=news&topic=public:x")
    answer = await get(daemon, "/events?topic=news&topic=progress:job-1")
    assert isinstance(answer, Response)
    assert (answer.status, answer.body) == (403, b"not allowed to subscribe to: progress:job-1\n")
    await stream.aclose()


async def test_header_mode_grants_header_and_duplicate_identity(
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon(
        {
            "listener": [{"tcp": "127.0.0.1:0", "trusted": True}],
            "auth": {
                "mode": "header",
                "grants_header": "X-Fanout-Grants",
                "grants": ["news"],
                "allow_anonymous": False,
            },
        }
    )
    headers = {"X-Fanout-User": "alice", "X-Fanout-Grants": "orders user:{user}:*"}
    stream = await subscribe(
        daemon.host,
        daemon.port,
        "/events?topic=news&topic=orders&topic=user:alice:x",
        headers=headers,
    )
    assert (await stream.next()).json()["user"] == "alice"  # type: ignore[index]
    answer = await get(daemon, "/events?topic=user:bob:x", headers)
    assert isinstance(answer, Response)
    assert answer.status == 403

    # A proxy that appends: the browser's value first, the proxy's after it.
    twice = await raw(
        daemon,
        "GET /events?topic=news HTTP/1.1\nHost: x\nX-Fanout-User: admin\nX-Fanout-User: alice\n",
    )
    assert twice.startswith(b"HTTP/1.1 400 ")
    assert b"identity header sent more than once" in twice
    assert "400 identity header sent more than once" in wait_for(
        lambda: daemon.log if "more than once" in daemon.log else None, what="the log line"
    )
    await stream.aclose()


async def test_cors_preflight_and_stream_headers(
    start_daemon: Callable[..., Daemon], short_tmp: Path
) -> None:
    keys = Keys(short_tmp)
    daemon = start_daemon(
        {
            **jwt_config(keys, cookie="tok"),
            "cors": {"allow_origins": [APP], "allow_credentials": True, "max_age_s": 60},
        }
    )
    preflight = await raw(
        daemon,
        "OPTIONS /events?topic=t HTTP/1.1\nHost: x\n"
        f"Origin: {APP}\nAccess-Control-Request-Method: GET\n"
        "Access-Control-Request-Headers: authorization,last-event-id\n",
    )
    head = preflight.decode()
    assert head.startswith("HTTP/1.1 204 No Content\r\n")
    assert f"Access-Control-Allow-Origin: {APP}\r\n" in head
    assert "Access-Control-Allow-Credentials: true\r\n" in head
    assert "Access-Control-Allow-Headers: Authorization, Last-Event-ID" in head
    assert head.endswith("\r\n\r\n")

    token = keys.es.token(grants("t"))
    stream = await subscribe(
        daemon.host,
        daemon.port,
        "/events?topic=t",
        headers={"Origin": APP, "Cookie": f"tok={token}"},
    )
    assert stream.headers["access-control-allow-origin"] == APP
    assert stream.headers["access-control-allow-credentials"] == "true"
    assert stream.headers["vary"] == "Origin"
    assert stream.headers["content-type"].startswith("text/event-stream")
    daemon.publish("t", 7)
    await stream.next()
    assert (await stream.next()).data == "7"
    await stream.aclose()

    evil = await get(daemon, "/events?topic=t", {"Origin": "http://evil", "Cookie": f"tok={token}"})
    assert isinstance(evil, Response)
    assert evil.status == 403
    assert "access-control-allow-origin" not in evil.headers


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_limit_refusal_carries_the_cors_headers(
    start_daemon: Callable[..., Daemon], short_tmp: Path, workers: int
) -> None:
    # fetch mode on another origin reads Retry-After on a 429 only with these headers.
    keys = Keys(short_tmp)
    daemon = start_daemon(
        {
            **jwt_config(keys),
            "workers": workers,
            "limits": {"max_connections_per_user": 1},
            "cors": {"allow_origins": [APP]},
        }
    )
    headers = {"Origin": APP, "Authorization": f"Bearer {keys.hs.token(grants('t'))}"}
    first = await subscribe(daemon.host, daemon.port, "/events?topic=t", headers=headers)
    daemon.wait_connections(1)
    over = await get(daemon, "/events?topic=t", headers)
    assert isinstance(over, Response)
    assert over.status == 429
    assert over.headers["retry-after"] == "5"
    assert over.headers["access-control-allow-origin"] == APP
    assert over.headers["access-control-expose-headers"] == "Retry-After"
    await first.aclose()


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_key_rotated_in_the_jwks_file_applies_on_sighup(
    start_daemon: Callable[..., Daemon], short_tmp: Path, workers: int
) -> None:
    old, new = Signer.new("EdDSA", kid="old"), Signer.new("ES256", kid="new")
    jwks = write_jwks(short_tmp / "keys.json", old)
    config = {
        "workers": workers,
        "auth": {"mode": "jwt", "allow_anonymous": False, "jwt": {"jwks_file": str(jwks)}},
    }
    daemon = start_daemon(config)
    headers = {"Authorization": f"Bearer {new.token(grants('t'))}"}
    refused = await get(daemon, "/events?topic=t", headers)
    assert isinstance(refused, Response)
    assert refused.status == 401
    write_jwks(jwks, old, new)
    daemon.send_signal(signal.SIGHUP)
    wait_for(
        lambda: daemon.log.count("reloaded the token keys") >= workers, 10, "the keys to reload"
    )
    stream = await get(daemon, "/events?topic=t", headers)
    assert not isinstance(stream, Response), "the rotated key is not in force"
    assert (await stream.next()).event == "connected"
    await stream.aclose()
