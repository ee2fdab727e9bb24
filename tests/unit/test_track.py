"""Progress tracking in the publisher clients: values in, recorded publishes out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fanout.client import AsyncPublisher, AsyncTask, Publisher, PublishError, Task


class Recorder:
    """Stands in for a Publisher: records what would be published."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any], str, str | None]] = []
        self.fail_with = fail_with

    def publish(self, topic: str, data: Any, *, event: str, user: str | None = None) -> None:
        self.calls.append((topic, data, event, user))
        if self.fail_with is not None:
            raise self.fail_with

    def states(self) -> list[tuple[float, str, str]]:
        return [(d["progress"], d["status"], d["message"]) for _, d, _, _ in self.calls]


class AsyncRecorder(Recorder):
    async def publish(  # type: ignore[override]
        self, topic: str, data: Any, *, event: str, user: str | None = None
    ) -> None:
        super().publish(topic, data, event=event, user=user)


def test_block_runs_then_completes_at_100() -> None:
    rec = Recorder()
    with Task(rec, "job-1", "alice", None) as task:  # type: ignore[arg-type]
        task.update(40, "step 4 of 10")
        task.update(50)
    assert rec.states() == [
        (0, "running", ""),
        (40, "running", "step 4 of 10"),
        (50, "running", "step 4 of 10"),  # the message stays until a new one is given
        (100, "completed", "done"),
    ]
    topic, data, event, user = rec.calls[-1]
    assert (topic, event, user) == ("progress:job-1", "progress", "alice")
    assert data == {"taskId": "job-1", "progress": 100, "status": "completed", "message": "done"}


def _copy(task: Task) -> None:
    with task:
        task.update(60, "copying")
        raise RuntimeError("disk full")


def test_exception_publishes_failed_with_its_message_and_propagates() -> None:
    rec = Recorder()
    with pytest.raises(RuntimeError, match="disk full"):
        _copy(Task(rec, "j", None, None))  # type: ignore[arg-type]
    # failed keeps the progress it had reached
    assert rec.states()[-1] == (60, "failed", "disk full")


def test_exception_without_message_names_its_type() -> None:
    rec = Recorder()
    with pytest.raises(KeyError), Task(rec, "j", None, None):  # type: ignore[arg-type]
        raise KeyError
    assert rec.states()[-1] == (0, "failed", "KeyError")


def test_pending_and_custom_topic() -> None:
    rec = Recorder()
    Task(rec, "j", None, "jobs:all").pending("queued")  # type: ignore[arg-type]
    assert rec.calls == [
        (
            "jobs:all",
            {"taskId": "j", "progress": 0, "status": "pending", "message": "queued"},
            "progress",
            None,
        )
    ]


@pytest.mark.parametrize("value", [-1, 100.5, 1000])
def test_progress_out_of_range_is_refused(value: float) -> None:
    rec = Recorder()
    task = Task(rec, "j", None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"0\.\.100"):
        task.update(value)
    assert rec.calls == []


def test_task_id_must_make_a_topic() -> None:
    with pytest.raises(ValueError, match="valid topic"):
        Task(Recorder(), "has space", None, None)  # type: ignore[arg-type]


def test_publish_errors_never_fail_the_work(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(fail_with=PublishError(503, "draining"))
    with Task(rec, "j", None, None) as task:  # type: ignore[arg-type]
        task.update(10)
    assert [s for _, s, _ in rec.states()] == ["running", "running", "completed"]
    assert "progress of j not published" in caplog.text


def test_real_publisher_without_daemon_does_not_raise(tmp_path: Path) -> None:
    publisher = Publisher(str(tmp_path / "absent.sock"), timeout=1)
    with publisher.track("job-7") as task:
        task.update(30, "working")
    assert (task.progress, task.status) == (100, "completed")


async def test_async_block_completes() -> None:
    rec = AsyncRecorder()
    async with AsyncTask(rec, "a", None, None) as task:  # type: ignore[arg-type]
        await task.update(70, "almost")
    assert rec.states() == [
        (0, "running", ""),
        (70, "running", "almost"),
        (100, "completed", "done"),
    ]


async def _validate(task: AsyncTask) -> None:
    async with task:
        await task.update(20)
        raise ValueError("bad input")


async def test_async_exception_publishes_failed_and_propagates() -> None:
    rec = AsyncRecorder()
    with pytest.raises(ValueError, match="bad input"):
        await _validate(AsyncTask(rec, "a", "bob", None))  # type: ignore[arg-type]
    assert rec.states()[-1] == (20, "failed", "bad input")
    assert rec.calls[-1][3] == "bob"


async def test_async_real_publisher_without_daemon_does_not_raise(tmp_path: Path) -> None:
    publisher = AsyncPublisher(str(tmp_path / "absent.sock"), timeout=1)
    async with publisher.track("job-8") as task:
        await task.update(30)
    assert task.status == "completed"
