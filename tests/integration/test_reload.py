"""SIGHUP reloads live settings without dropping anyone; sd_notify tells systemd.

The test plays systemd's part: it binds the datagram socket and hands its path to
the daemon in NOTIFY_SOCKET, as the service manager does for Type=notify.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import Daemon, merge, wait_for
from tests.sse_client import Response, request, subscribe

pytestmark = pytest.mark.integration


class Notifications:
    """The receiving end of NOTIFY_SOCKET: one datagram per sd_notify call."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def next(self, timeout: float = 10.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n") if line)


@pytest.fixture
def notify(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Notifications]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(short_tmp / "notify")
    sock.bind(path)
    # The daemon subprocess inherits the environment, as under systemd.
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield Notifications(sock)
    sock.close()


def rewrite(daemon: Daemon, changes: dict[str, Any]) -> None:
    daemon.config = merge(daemon.config, changes)
    daemon.config_path.write_text(tomli_w.dumps(daemon.config))


def reload(daemon: Daemon, notify: Notifications) -> None:
    """SIGHUP, then wait for the reload to finish as systemd does: RELOADING, READY."""
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    assert notify.next().get("RELOADING") == "1"
    assert notify.next().get("READY") == "1"


async def test_ready_reload_stopping_sequence(start_daemon, notify):
    daemon = start_daemon({"limits": {"max_connections": 2}})
    # READY=1 comes once the listeners accept: start_daemon already got /stats.
    ready = notify.next()
    assert ready["READY"] == "1"
    assert "serving on http://127.0.0.1:" in ready["STATUS"]

    first = [await subscribe(daemon.host, daemon.port, "/events?topic=t") for _ in range(2)]
    full = await request(daemon.host, daemon.port, "/events?topic=t")
    assert isinstance(full, Response)
    assert full.status == 503

    rewrite(
        daemon,
        {
            "limits": {"max_connections": 3},
            "stream": {"heartbeat_interval_s": 0.2},
            "log": {"level": "debug"},
        },
    )
    reload(daemon, notify)
    assert "limits.max_connections" in daemon.log
    third = await subscribe(daemon.host, daemon.port, "/events?topic=t")
    # The default interval is 15 s: a comment within seconds is the new one.
    await third.wait_comment(1, timeout=5)
    # The connections opened before the reload were kept and still receive events.
    assert daemon.publish("t", "after reload")["sent"] == 3
    for client in [*first, third]:
        await client.next()  # connected
        assert (await client.next()).json() == "after reload"

    assert daemon.stop() == 0
    for client in [*first, third]:
        await client.until_closed()
        client.close()
    assert notify.next()["STOPPING"] == "1"


async def test_restart_only_settings_are_reported_and_kept(start_daemon, notify):
    daemon = start_daemon()
    notify.next()  # READY
    old_port = daemon.port
    rewrite(daemon, {"listener": [{"tcp": "127.0.0.1:1"}], "replay": {"max_age_s": 1.0}})
    reload(daemon, notify)
    log = daemon.log
    assert "listener changed but needs a restart" in log
    assert "replay.max_age_s changed but needs a restart" in log
    assert f"http://127.0.0.1:{old_port}" in daemon.stats()["listeners"]
    client = await subscribe(daemon.host, old_port, "/events?topic=t")
    assert (await client.next()).event == "connected"
    client.close()


async def test_bad_file_keeps_the_running_settings(start_daemon, notify):
    daemon = start_daemon({"limits": {"max_connections": 1}})
    notify.next()  # READY
    daemon.config_path.write_text("[limits]\nmax_connections = 0\n")
    reload(daemon, notify)  # READY=1 follows even a failed reload: still serving
    errors = [line for line in daemon.log.splitlines() if "reload failed" in line]
    assert len(errors) == 1
    assert "max_connections" in errors[0]
    client = await subscribe(daemon.host, daemon.port, "/events?topic=t")
    refused = await request(daemon.host, daemon.port, "/events?topic=t")
    assert isinstance(refused, Response)
    assert refused.status == 503  # still the old cap of 1
    client.close()


async def test_per_user_limit_is_reloaded(start_daemon, notify):
    daemon = start_daemon(
        {
            "listener": [{"tcp": "127.0.0.1:0", "trusted": True}],
            "auth": {"mode": "header"},
            "limits": {"max_connections_per_user": 1},
        }
    )
    notify.next()  # READY
    alice = {"X-Fanout-User": "alice"}
    kept = await subscribe(daemon.host, daemon.port, "/events?topic=t", headers=alice)
    refused = await request(daemon.host, daemon.port, "/events?topic=t", headers=alice)
    assert isinstance(refused, Response)
    assert refused.status == 429
    assert refused.headers["retry-after"] == "5"
    rewrite(daemon, {"limits": {"max_connections_per_user": 2, "retry_after_s": 7}})
    reload(daemon, notify)
    second = await subscribe(daemon.host, daemon.port, "/events?topic=t", headers=alice)
    refused = await request(daemon.host, daemon.port, "/events?topic=t", headers=alice)
    assert isinstance(refused, Response)
    assert refused.status == 429
    assert refused.headers["retry-after"] == "7"
    wait_for(lambda: "refused" in daemon.log, what="refusal logged")
    kept.close()
    second.close()


# -- the shipped systemd unit -----------------------------------------------------

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "fanout.service"
FANOUT = Path(sys.executable).parent / "fanout"


def render_unit(config: Path) -> str:
    text = UNIT.read_text()
    for old, new in {
        "/opt/fanout/venv/bin/fanout": str(FANOUT),
        "/etc/fanout/config.toml": str(config),
    }.items():
        assert old in text, f"{UNIT} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def service_settings(text: str) -> dict[str, str]:
    section, out = "", {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_systemd_unit_settings() -> None:
    unit = service_settings(UNIT.read_text())
    assert unit["Type"] == "notify"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(unit["LimitNOFILE"]) > 20_000
    # The default drain (stream.shutdown_timeout_s) fits with a margin.
    assert int(unit["TimeoutStopSec"]) >= 2 * 10


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(short_tmp: Path) -> None:
    unit = short_tmp / "fanout.service"
    text = render_unit(short_tmp / "fanout.toml")
    # `verify` checks the user exists; the shipped `fanout` user is the admin's to create.
    unit.write_text(text.replace("User=fanout", "User=root").replace("Group=fanout", "Group=root"))
    (short_tmp / "fanout.toml").write_text("")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys and bad values; its warnings are the signal.
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


@pytest.mark.skipif(not FANOUT.exists(), reason="the fanout console script is not installed")
def test_unit_commands_drive_the_daemon_as_systemd_would(short_tmp: Path, notify) -> None:
    """ExecStartPre, ExecStart, ExecReload and the stop, run as the unit spells them."""
    config = short_tmp / "fanout.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "listener": [{"unix": str(short_tmp / "pub.sock"), "trusted": True}],
                "control": {"socket": str(short_tmp / "c.sock")},
            }
        )
    )
    unit = service_settings(render_unit(config))
    subprocess.run(shlex.split(unit["ExecStartPre"]), check=True, capture_output=True, timeout=30)
    log = short_tmp / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(shlex.split(unit["ExecStart"]), stderr=out, cwd=short_tmp)
    try:
        assert notify.next()["READY"] == "1"
        reload_command = unit["ExecReload"].replace("$MAINPID", str(proc.pid))
        subprocess.run(shlex.split(reload_command), check=True, timeout=10)
        assert notify.next()["RELOADING"] == "1"
        assert notify.next()["READY"] == "1"
        proc.send_signal(getattr(signal, unit["KillSignal"]))
        assert notify.next()["STOPPING"] == "1"
        assert proc.wait(int(unit["TimeoutStopSec"])) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "reloaded" in log.read_text()
