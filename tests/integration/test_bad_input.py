"""Bad requests get a clear 4xx, publish nothing, and hurt nobody else."""

from __future__ import annotations

import asyncio
import socket
import time

import orjson
import pytest

from tests.sse_client import Response, request, subscribe

pytestmark = pytest.mark.integration


async def control(daemon, method: str, path: str, body: bytes, ctype: str = "application/json"):
    """One raw request on a fresh control connection: (status, headers, json body)."""
    reader, writer = await asyncio.open_unix_connection(daemon.control)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    raw = await reader.readuntil(b"\r\n\r\n")
    status = int(raw.split()[1])
    length = int(raw.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    payload = await reader.readexactly(length)
    writer.close()
    await writer.wait_closed()
    return status, raw.decode(), orjson.loads(payload)


BAD = [
    (b'{"topic": "a", "data": ', "application/json", 400, "invalid JSON"),
    (b'{"topic": ["a"], "data": 1}', "application/json", 400, "$.topic"),
    (b'{"topic": "a", "data": 1, "event": 7}', "application/json", 400, "$.event"),
    (b'{"topic": "a"}', "application/json", 400, "missing `data`"),
    (
        b'{"topic": "a", "data": 1}\n{"topic": "a", "dta": 2}\n',
        "application/x-ndjson",
        400,
        "line 2",
    ),
    (b'{"topic": "a", "data": 1}', "text/csv", 415, "Content-Type"),
    (b'{"topic": "a", "data": "' + b"x" * 5000 + b'"}', "application/json", 413, "larger than"),
]


@pytest.mark.parametrize(("body", "ctype", "status", "needle"), BAD)
async def test_bad_publish_publishes_nothing(start_daemon, body, ctype, status, needle):
    daemon = start_daemon({"control": {"max_body_bytes": 4096}})
    sub = await subscribe(daemon.host, daemon.port, "/events?topic=a")
    await sub.next()
    got_status, _, answer = await control(daemon, "POST", "/publish", body, ctype)
    assert got_status == status
    assert needle in answer["error"]
    stats = daemon.stats()
    assert stats["published"] == 0
    assert stats["delivered"] == 0
    # The subscriber's next event is the first good one: nothing leaked before it.
    daemon.publish("a", "good")
    assert (await sub.next()).json() == "good"
    await sub.aclose()


async def test_control_keeps_serving_on_the_same_connection_after_a_400(daemon):
    reader, writer = await asyncio.open_unix_connection(daemon.control)
    bad = b"{"
    good = b'{"topic": "a", "data": 1}'
    for body in (bad, good):
        writer.write(
            b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        )
    first = await reader.readuntil(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 400")
    await reader.readuntil(b"}\n")
    second = await reader.readuntil(b"\r\n\r\n")
    assert second.startswith(b"HTTP/1.1 200")
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/publish", 405), ("POST", "/nope", 404), ("POST", "/notify/", 404)],
)
async def test_control_routing_errors(daemon, method, path, status):
    got, head, answer = await control(daemon, method, path, b"{}")
    assert got == status
    assert answer["error"]
    if status == 405:
        assert "Allow: POST" in head


async def test_malformed_http_on_public_listener_gets_400(daemon):
    reader, writer = await asyncio.open_connection(daemon.host, daemon.port)
    writer.write(b"GARBAGE\r\n\r\n")
    answer = await reader.read()
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"malformed request" in answer
    writer.close()
    await writer.wait_closed()


async def test_oversized_headers_get_431(daemon):
    r = await request(daemon.host, daemon.port, "/events", headers={"X-Big": "x" * 20_000})
    assert isinstance(r, Response)
    assert r.status == 431


def test_headers_dribbled_too_slowly_are_cut(start_daemon):
    daemon = start_daemon({"limits": {"header_timeout_s": 0.5}})
    sock = socket.create_connection((daemon.host, daemon.port))
    sock.settimeout(0.05)
    request_bytes = b"GET /events?topic=a HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 10_000
    started = time.monotonic()
    closed = False
    # One byte per wait: data keeps arriving, but the deadline runs from the start.
    for byte in request_bytes[:400]:
        try:
            sock.send(bytes([byte]))
            closed = sock.recv(1024) == b""
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if closed:
            break
    elapsed = time.monotonic() - started
    sock.close()
    assert closed, "the daemon kept a connection whose headers never completed"
    assert elapsed < 5
    assert daemon.stats()["timeouts"] == 1


async def test_one_bad_client_does_not_hurt_others(daemon):
    good = await subscribe(daemon.host, daemon.port, "/events?topic=a")
    await good.next()
    for junk in (
        b"\x00\xff" * 100,
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /events?topic=%ZZ HTTP/1.1\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection(daemon.host, daemon.port)
        writer.write(junk)
        await reader.read()
        writer.close()
        await writer.wait_closed()
    daemon.publish("a", "still fine")
    assert (await good.next()).json() == "still fine"
    await good.aclose()


@pytest.mark.parametrize("target", ["//[x/events", "/events?topic=%ZZ"])
async def test_malformed_target_gets_400_not_a_traceback(daemon, target):
    reader, writer = await asyncio.open_connection(daemon.host, daemon.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 404 Not Found")
    assert "Traceback" not in daemon.log
