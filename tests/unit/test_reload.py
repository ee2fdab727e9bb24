"""Which settings a SIGHUP applies and which wait for a restart: values in, plan out."""

from __future__ import annotations

import msgspec

from fanout.config import Config, Control, Limits, Listener, Log, Replay, Stream
from fanout.reload import plan


def test_nothing_changed() -> None:
    config = Config()
    result = plan(config, Config())
    assert result.applied == ()
    assert result.restart == ()
    assert result.config is config


def test_live_settings_are_applied() -> None:
    new = Config(
        limits=Limits(max_connections=10, per_user_policy="evict-oldest"),
        stream=Stream(heartbeat_interval_s=1.0),
        log=Log(level="debug"),
    )
    result = plan(Config(), new)
    assert set(result.applied) == {
        "limits.max_connections",
        "limits.per_user_policy",
        "stream.heartbeat_interval_s",
        "log.level",
    }
    assert result.restart == ()
    assert result.config == new


def test_restart_settings_keep_the_running_value() -> None:
    old = Config()
    new = Config(
        listener=[Listener(tcp="127.0.0.1:9999")],
        control=Control(socket="/elsewhere.sock"),
        replay=Replay(max_events_per_topic=5),
        stream=Stream(retry_ms=10, heartbeat_interval_s=2.0),
    )
    result = plan(old, new)
    assert set(result.restart) == {
        "listener",
        "control.socket",
        "replay.max_events_per_topic",
        "stream.retry_ms",
    }
    assert result.applied == ("stream.heartbeat_interval_s",)
    assert result.config.listener == old.listener
    assert result.config.control == old.control
    assert result.config.replay == old.replay
    assert result.config.stream == msgspec.structs.replace(old.stream, heartbeat_interval_s=2.0)
