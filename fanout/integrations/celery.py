"""Celery: a task's progress on `progress:<task id>`, from the moment it is queued.

    from fanout.integrations.celery import enqueue, track

    @app.task(bind=True)
    def export(self, user_id):
        with track(self, user=user_id) as progress:      # running, 0%
            for i, chunk in enumerate(chunks):
                write(chunk)
                progress.update(100 * (i + 1) / len(chunks), f"chunk {i + 1}")
        # completed at 100%; an exception publishes failed with its message

    # in the web view: the page can subscribe to progress:<id> before a worker starts
    result = enqueue(export, args=[user.id], user=user.id)   # pending, "queued"
    return {"task": result.id}

The control socket is the Celery setting `fanout_socket` (`app.conf.fanout_socket`),
else the environment variable FANOUT_SOCKET, else "./run/fanout.sock". Each worker
process gets its own Publisher (the prefork pool forks after importing the app).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery
from celery import Task as CeleryTask
from celery.result import AsyncResult

from ..client import DEFAULT_SOCKET, Publisher, Task
from . import process_publisher


def socket_path(app: Celery | None = None) -> str:
    configured = app.conf.get("fanout_socket") if app is not None else None
    return str(configured or os.environ.get("FANOUT_SOCKET") or DEFAULT_SOCKET)


def get_publisher(app: Celery | None = None) -> Publisher:
    """This process's Publisher on the socket configured for `app`."""
    return process_publisher(socket_path(app))


def track(task: CeleryTask, *, user: str | None = None, publisher: Publisher | None = None) -> Task:
    """Progress of the task being run, for a `bind=True` task: `with track(self) as p:`.

    The topic is `progress:<task id>`, the id `enqueue` (or apply_async) returned.
    """
    task_id = task.request.id
    if not task_id:
        raise ValueError("track() needs a task run by a worker, apply() or apply_async()")
    pub = publisher if publisher is not None else get_publisher(task.app)
    return pub.track(str(task_id), user=user)


def enqueue(
    task: CeleryTask,
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    user: str | None = None,
    message: str = "queued",
    publisher: Publisher | None = None,
    **options: Any,
) -> AsyncResult:
    """`task.apply_async` with a fresh id, after publishing that task as pending.

    A page that subscribes to `progress:<id>` (a latest-value topic) right after
    this returns shows "queued" until a worker takes the task, instead of nothing.
    If the broker refuses the task, its progress says failed and the error is raised.
    """
    task_id = str(options.pop("task_id", None) or uuid.uuid4())
    pub = publisher if publisher is not None else get_publisher(task.app)
    progress = pub.track(task_id, user=user)
    progress.pending(message)
    try:
        result: AsyncResult = task.apply_async(
            tuple(args), dict(kwargs or {}), task_id=task_id, **options
        )
    except Exception as exc:
        progress.fail(f"could not be queued: {exc}")
        raise
    return result
