"""Bounds that hold against hostile and unlucky clients, against the real daemon:
descriptors, answers nobody reads, per-address caps."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fanout.client import PublishError
from tests.conftest import Daemon, wait_for

pytestmark = pytest.mark.integration


def connect(daemon: Daemon, source: str = "127.0.0.1", rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.connect((daemon.host, daemon.port))
    return sock


def answer_now(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What the daemon said before the client said anything (b"" if nothing yet)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


def test_a_cap_the_open_files_limit_cannot_hold_is_refused_at_start(
    start_daemon: Callable[..., Daemon],
) -> None:
    with pytest.raises(RuntimeError) as info:
        start_daemon({"limits": {"max_connections": 1000}}, nofile=256)
    assert "limits.max_connections = 1000 needs 1064 open files, but the limit is 256" in str(
        info.value
    )


def test_connections_that_hold_every_descriptor_never_lock_out_publishers(
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon(
        {"limits": {"max_connections": 100, "header_timeout_s": 30.0}}, nofile=200
    )
    # 200 files, 64 reserved: 136 connections at most, streams or not (100 streams
    # and headroom for requests being read). These hold one each and send nothing...
    held = [connect(daemon) for _ in range(136)]
    assert all(answer_now(sock, 0.05) == b"" for sock in held[-3:])
    extra = [connect(daemon) for _ in range(60)]
    for sock in extra:
        answer = answer_now(sock)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
        assert b"Retry-After: 5" in answer
    # ...and the control socket still answers, with descriptors to spare.
    assert daemon.publish("t", 1)["sent"] == 0
    assert daemon.stats()["refused"]["503"] == 60
    for sock in held + extra:
        sock.close()


def test_an_answer_that_is_not_read_is_cut_after_the_header_timeout(
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon({"limits": {"header_timeout_s": 0.5, "socket_send_buffer_bytes": 1024}})
    # fanout.js (12 KB) does not fit in the two small socket buffers: the daemon
    # holds the rest, and the connection's descriptor, until it gives up.
    sock = connect(daemon, rcvbuf=1024)
    sock.sendall(b"GET /fanout.js HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(1.5)
    sock.settimeout(5)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    # What the kernel had taken arrives; the rest the daemon held was dropped with
    # the connection (the full answer is over 12 KB).
    assert got.startswith(b"HTTP/1.1 200 ")
    assert len(got) < 12_000, len(got)
    sock.close()


def test_per_address_cap_and_connect_rate(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon({"limits": {"max_connections_per_ip": 3, "header_timeout_s": 30.0}})
    held = [connect(daemon) for _ in range(3)]
    fourth = connect(daemon)
    answer = answer_now(fourth)
    assert answer.startswith(b"HTTP/1.1 429 "), answer[:80]
    assert b"too many connections from this address (at most 3)" in answer
    other = connect(daemon, "127.0.0.2")
    assert answer_now(other, 0.5) == b""  # another address has its own share
    held[0].close()
    wait_for(lambda: daemon.stats()["refused"].get("429") == 1, 5, "the refusal to count")
    freed = []

    def admitted_again() -> bool:
        freed.append(connect(daemon))
        return answer_now(freed[-1], 0.3) == b""

    wait_for(admitted_again, 10, "the freed slot to be usable")
    for sock in [*held, fourth, other, *freed]:
        sock.close()

    rated = start_daemon({"limits": {"connects_per_ip_per_s": 0.01, "connect_burst_per_ip": 2}})
    first = [connect(rated) for _ in range(2)]
    third = connect(rated)
    assert b"connecting too often from this address" in answer_now(third)
    for sock in [*first, third]:
        sock.close()
    with pytest.raises(PublishError):
        rated.publisher.publish("bad topic", 1)  # the control socket is not rate limited


def rss(daemon: Daemon) -> int:
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("last_id", ["not-an-id", None])
def test_openings_nobody_reads_do_not_copy_the_replay(
    start_daemon: Callable[..., Daemon], last_id: str | None
) -> None:
    # About 7 MiB retained on one topic (or as latest values): each of 30 streams that
    # never read used to get its own joined copy of it (+210 MiB).
    latest = last_id is None
    daemon = start_daemon(
        {
            "limits": {"header_timeout_s": 30.0},
            "replay": {
                "max_bytes_total": 32 * 1024 * 1024,
                "latest_value_topics": ["p:*"] if latest else [],
            },
        }
    )
    payload = "x" * 500_000
    topics = [f"p:{n}" for n in range(14)] if latest else ["t"] * 14
    for topic in topics:
        daemon.publish(topic, payload)
    before = rss(daemon)
    query = "&".join(f"topic={t}" for t in sorted(set(topics)))
    head = f"GET /events?{query} HTTP/1.1\r\nHost: x\r\n"
    if last_id:
        head += f"Last-Event-ID: {last_id}\r\n"
    socks = []
    for _ in range(30):
        sock = connect(daemon, rcvbuf=4096)
        sock.sendall(head.encode() + b"\r\n")
        socks.append(sock)
    daemon.wait_connections(30)
    grown = rss(daemon) - before
    assert grown < 24 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB"
    # The daemon is still all there for everyone else.
    assert daemon.publish("other", 1)["id"]
    for sock in socks:
        sock.close()
