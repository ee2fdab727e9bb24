"""fanout.integrations.celery: a real Celery worker, on a real redis-server, reports progress.

Each test starts redis-server on a temp Unix socket (the broker and the result
backend), the daemon, and `celery worker --pool=solo` as a subprocess with the
tasks of tests/integration/celery_tasks.py; the page's view is an SSE subscriber.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from fanout.integrations import celery as fanout_celery
from fanout.integrations import close_process_publishers
from tests.conftest import Daemon, base_config, merge
from tests.integration import celery_tasks
from tests.integration.test_backplane import RedisServer
from tests.sse_client import SSEClient, subscribe

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LATEST = {"replay": {"latest_value_topics": ["progress:*"]}}
# One process running one task at a time, none of the cluster chatter a test needs not.
WORKER_ARGS = [
    *("-A", "tests.integration.celery_tasks", "worker", "--pool=solo", "--loglevel=WARNING"),
    *("--hostname=fanout-test@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"),
]


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def celery_worker() -> Iterator[tuple[Daemon, Worker]]:
    """redis-server, the daemon and a real worker, shared by this module's tests.

    Module-scoped because the test process's Celery app caches its result backend
    connection: one Redis for the module keeps that cache valid (and saves startups).
    """
    workdir = Path(tempfile.mkdtemp(prefix="fo-celery-", dir="/tmp"))
    redis = RedisServer(workdir, persistent=False).start()
    (workdir / "daemon").mkdir()
    daemon = Daemon(workdir / "daemon", merge(base_config(workdir / "daemon"), LATEST)).start()
    broker = f"redis+socket://{redis.socket}"
    env = {**os.environ, "FANOUT_TEST_BROKER": broker, "FANOUT_TEST_SOCKET": daemon.control}
    log = workdir / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", *WORKER_ARGS],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(proc, log)
    # The test process queues tasks and reads results through the same app.
    celery_tasks.app.conf.update(
        broker_url=broker, result_backend=broker, fanout_socket=daemon.control
    )
    try:
        yield daemon, worker
    finally:
        close_process_publishers()  # enqueue's, on this daemon
        worker.stop()
        daemon.stop()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def progress_stream(daemon: Any, task_id: str) -> SSEClient:
    client = await subscribe(daemon.host, daemon.port, f"/events?topic=progress:{task_id}")
    assert (await client.next()).event == "connected"
    return client


def states(events: list[Any]) -> list[tuple[float, str, str]]:
    assert {e.event for e in events} == {"progress"}
    return [(e.json()["progress"], e.json()["status"], e.json()["message"]) for e in events]


async def test_a_task_s_progress_from_queued_to_completed(celery_worker):
    daemon, worker = celery_worker
    stream = await progress_stream(daemon, "export-1")

    result = fanout_celery.enqueue(celery_tasks.process_items, args=[3], task_id="export-1")
    assert result.id == "export-1"
    events = await stream.events(6, timeout=30)
    assert states(events) == [
        (0, "pending", "queued"),  # published by enqueue, before the worker has it
        (0, "running", ""),
        (33.3, "running", "item 1 of 3"),
        (66.7, "running", "item 2 of 3"),
        (100, "running", "item 3 of 3"),
        (100, "completed", "done"),
    ], worker.log.read_text()
    assert events[0].json()["taskId"] == "export-1"
    assert result.get(timeout=30) == 3

    # A page opened afterwards sees the outcome at once (progress:* keeps its latest).
    late = await progress_stream(daemon, "export-1")
    assert states([await late.next()]) == [(100, "completed", "done")]
    stream.close()
    late.close()


async def test_a_failing_task_reports_failed_with_its_message(celery_worker):
    daemon, worker = celery_worker
    result = fanout_celery.enqueue(celery_tasks.fail_halfway)
    stream = await progress_stream(daemon, result.id)  # subscribed late: the latest value
    with pytest.raises(ValueError, match="disk full"):
        result.get(timeout=30, propagate=True)
    seen = [await stream.next(timeout=30)]
    while seen[-1].json()["status"] != "failed":
        seen.append(await stream.next(timeout=30))
    assert states(seen[-1:]) == [(50, "failed", "disk full")], worker.log.read_text()
    stream.close()


async def test_a_task_the_broker_refuses_is_reported_failed(daemon, short_tmp):
    unreachable = Celery("refused", broker=f"redis+socket://{short_tmp}/no-redis.sock")
    # Fail at once instead of redis-py's retries of the connection (6 s).
    unreachable.conf.broker_transport_options = {"max_retries": 0}

    @unreachable.task(bind=True)
    def never(self: Any) -> None:
        raise AssertionError("not run")

    stream = await progress_stream(daemon, "refused-1")
    with pytest.raises(Exception, match="No such file or directory") as info:
        fanout_celery.enqueue(never, task_id="refused-1", publisher=daemon.publisher, retry=False)
    events = await stream.events(2)
    assert [e.json()["status"] for e in events] == ["pending", "failed"]
    assert events[1].json()["message"].startswith("could not be queued: ")
    assert str(info.value) in events[1].json()["message"]
    stream.close()


def test_track_outside_a_worker_is_refused():
    with pytest.raises(ValueError, match="run by a worker"):
        fanout_celery.track(celery_tasks.process_items)


def test_the_socket_comes_from_the_app_then_the_environment(monkeypatch):
    app = Celery("conf")
    monkeypatch.delenv("FANOUT_SOCKET", raising=False)
    assert fanout_celery.socket_path(app) == "./run/fanout.sock"
    monkeypatch.setenv("FANOUT_SOCKET", "/run/env.sock")
    assert fanout_celery.socket_path(app) == "/run/env.sock"
    app.conf.fanout_socket = "/run/app.sock"
    assert fanout_celery.socket_path(app) == "/run/app.sock"
