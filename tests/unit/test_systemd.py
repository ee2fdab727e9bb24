"""sd_notify over a real datagram socket that the test binds, as systemd would."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout import systemd


@pytest.fixture
def receiver(short_tmp: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(short_tmp / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_address_forms() -> None:
    assert systemd.socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert systemd.socket_address("@abstract/name") == "\0abstract/name"
    assert systemd.socket_address("vsock:2:1234") is None


def test_no_notify_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False


def test_ready_is_one_datagram(receiver: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.getsockname())
    assert systemd.ready("serving") is True
    assert receiver.recv(4096) == b"READY=1\nSTATUS=serving"


def test_reloading_carries_monotonic_time(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.getsockname())
    systemd.reloading()
    fields = dict(line.split("=", 1) for line in receiver.recv(4096).decode().split("\n"))
    assert fields["RELOADING"] == "1"
    assert int(fields["MONOTONIC_USEC"]) > 0


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"fanout-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.stopping() is True
        assert sock.recv(4096).startswith(b"STOPPING=1")


def test_unreachable_socket_is_not_fatal(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_tmp / "nobody-listens"))
    assert systemd.ready() is False
