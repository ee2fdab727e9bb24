"""Start-up errors, stale and live sockets, and the SIGTERM drain."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.sse_client import subscribe

pytestmark = pytest.mark.integration


async def test_sigterm_drains_streams_and_exits_zero(start_daemon):
    daemon = start_daemon({"stream": {"retry_ms": 1000, "shutdown_retry_spread_ms": 2000}})
    chunked = [await subscribe(daemon.host, daemon.port, "/events?topic=a") for _ in range(3)]
    raw = await subscribe(daemon.host, daemon.port, "/events?topic=a", http10=True)
    for c in [*chunked, raw]:
        await c.next()
    daemon.send_signal(signal.SIGTERM)
    for c in [*chunked, raw]:
        assert await c.until_closed(timeout=10) == []
        assert c.ended
        assert 1000 <= c.retry <= 3000  # the jittered reconnect hint
    assert daemon.proc.wait(10) == 0
    assert not os.path.exists(daemon.control)  # noqa: ASYNC240 - the daemon is gone
    assert "stopped" in daemon.log


def test_stale_socket_is_replaced(start_daemon, short_tmp):
    path = short_tmp / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens: what a killed daemon leaves
    daemon = start_daemon({"control": {"socket": str(path)}})
    assert daemon.stats()["connections"] == 0
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert "replacing stale socket" in daemon.log


def test_live_socket_is_refused_with_one_line(daemon, short_tmp):
    config = short_tmp / "second.toml"
    config.write_text(
        f'[[listener]]\ntcp = "127.0.0.1:0"\n[control]\nsocket = "{daemon.control}"\n'
    )
    second = subprocess.run(
        [sys.executable, "-m", "fanout", "serve", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "another process is listening" in lines[0]
    assert "Traceback" not in second.stderr
    assert daemon.stats()["connections"] == 0  # the first daemon is untouched


def test_port_in_use_is_one_line(daemon, short_tmp):
    config = short_tmp / "third.toml"
    config.write_text(
        f'[[listener]]\ntcp = "127.0.0.1:{daemon.port}"\n[control]\nsocket = "{short_tmp}/x.sock"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "fanout", "serve", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{daemon.port}" in out.stderr
    assert "Traceback" not in out.stderr
    assert not os.path.exists(f"{short_tmp}/x.sock")


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_bad_config_exits_nonzero_with_one_line(short_tmp, command):
    config = short_tmp / "bad.toml"
    config.write_text("[limits]\nmax_connections = -1\n")
    args = ["serve", "-c", str(config)] if command == "serve" else ["check-config", str(config)]
    out = subprocess.run(
        [sys.executable, "-m", "fanout", *args], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert str(config) in out.stderr
    assert "$.limits.max_connections" in out.stderr
