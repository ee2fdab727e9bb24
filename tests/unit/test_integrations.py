"""fanout.integrations' shared publishers: one per process and socket, a new one after a fork."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fanout import integrations


@pytest.fixture(autouse=True)
def _fresh() -> None:
    integrations.close_process_publishers()


def test_one_publisher_per_socket_path() -> None:
    a = integrations.process_publisher("/tmp/a.sock")
    assert integrations.process_publisher("/tmp/a.sock") is a
    assert integrations.process_publisher("/tmp/b.sock") is not a


def test_a_forked_child_gets_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = integrations.process_publisher("/tmp/a.sock")
    # What os.getpid() says in a child of gunicorn --preload or Celery's prefork pool.
    child_pid = os.getpid() + 1
    monkeypatch.setattr(integrations.os, "getpid", lambda: child_pid)
    child = integrations.process_publisher("/tmp/a.sock")
    assert child is not parent
    assert integrations.process_publisher("/tmp/a.sock") is child


def test_close_forgets_them() -> None:
    first = integrations.process_publisher("/tmp/a.sock")
    integrations.close_process_publishers()
    assert integrations.process_publisher("/tmp/a.sock") is not first


def test_importing_the_package_imports_no_framework() -> None:
    # The daemon and fanout.client users must not pay for (or need) any framework.
    code = (
        "import sys, fanout.integrations, fanout.client, fanout.cli;"
        "print([m for m in ('django', 'starlette', 'fastapi', 'celery') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
