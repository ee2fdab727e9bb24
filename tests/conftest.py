"""Shared fixtures: the real daemon on an ephemeral port and a short temp Unix socket."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fanout.client import Publisher, PublishError

STARTUP_DEADLINE_S = 15.0


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll a condition with a bounded deadline (for state outside our process)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class Daemon:
    """A real `fanout serve` subprocess."""

    def __init__(self, workdir: Path, config: dict[str, Any], nofile: int | None = None) -> None:
        self.workdir = workdir
        self.nofile = nofile  # an open-files limit (soft and hard) for the daemon alone
        self.config = config
        self.config_path = workdir / "fanout.toml"
        self.config_path.write_text(tomli_w.dumps(config))
        self.control = config["control"]["socket"]
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self.publisher = Publisher(self.control)

    def start(self) -> Daemon:
        log = open(self.log_path, "ab")  # noqa: SIM115 - held by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "serve", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            preexec_fn=self._limit if self.nofile else None,
        )
        log.close()
        stats = wait_for(self._ready, STARTUP_DEADLINE_S, f"daemon to start; log:\n{self.log}")
        tcp = [u for u in stats["listeners"] if u.startswith("http://")]
        if tcp:
            self.port = int(tcp[0].rsplit(":", 1)[1])
        return self

    def _limit(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _ready(self) -> dict[str, Any] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log}")
        try:
            return self.publisher.stats()
        except (PublishError, OSError):
            self.publisher.close()
            return None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stats(self) -> dict[str, Any]:
        return self.publisher.stats()

    def publish(self, topic: str, data: Any = None, **kw: Any) -> dict[str, Any]:
        return self.publisher.publish(topic, data, **kw)

    def wait_connections(self, n: int, timeout: float = 20.0) -> None:
        wait_for(lambda: self.stats()["connections"] == n, timeout, f"{n} connections")

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        self.publisher.close()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def base_config(workdir: Path) -> dict[str, Any]:
    return {
        "listener": [{"tcp": "127.0.0.1:0"}],
        "control": {"socket": str(workdir / "c.sock")},
        "stream": {"shutdown_timeout_s": 5.0},
        "log": {"level": "info"},
    }


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # Unix socket paths are limited to about 100 bytes; pytest's tmp_path is long.
    path = Path(tempfile.mkdtemp(prefix="fo-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_daemon(short_tmp: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []
    counter = iter(range(1000))

    def start(config: dict[str, Any] | None = None, nofile: int | None = None) -> Daemon:
        workdir = short_tmp / f"d{next(counter)}"
        workdir.mkdir()
        daemon = Daemon(workdir, merge(base_config(workdir), config or {}), nofile)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        with contextlib.suppress(Exception):
            daemon.stop(signal.SIGKILL if os.environ.get("FANOUT_TEST_KILL") else signal.SIGTERM)


@pytest.fixture
def daemon(start_daemon: Callable[..., Daemon]) -> Daemon:
    return start_daemon()
