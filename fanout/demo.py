"""The demo publisher: runs inside the daemon when `[demo] enabled = true`.

It publishes through the real control socket with AsyncPublisher, exactly as an app
would, so the page at /demo shows the whole path: publisher -> control socket ->
hub -> browser. It drives a live counter, a stream of notifications, and progress
jobs that the page starts with `POST /demo/jobs` (tracked with `track()`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import Any

from .client import AsyncPublisher, PublishError
from .config import Config, Demo
from .pages import Pages

log = logging.getLogger("fanout.demo")

COUNTER_TOPIC = "demo:counter"
NOTIFICATIONS_TOPIC = "demo:notifications"
JOB_STEPS = 10
FAIL_AT_STEP = 6

_SAMPLES = (
    ("info", "New sign-up", "ada@example.com created an account"),
    ("success", "Deploy finished", "web-7 is serving build 2f9c1e"),
    ("info", "Comment", "Grace replied on “Quarterly report”"),
    ("warning", "Disk space", "db-2 is at 81% of its volume"),
    ("success", "Payment received", "Invoice #1042 was paid"),
)


class DemoJobFailed(Exception):
    """The failure a demo job started with fail=true simulates."""


class DemoPublisher:
    def __init__(self, socket_path: str, settings: Demo) -> None:
        self._publisher = AsyncPublisher(socket_path)
        self._settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self._running_jobs = 0
        self._serial = itertools.count(1)

    def start(self) -> None:
        self._spawn(self._counter())
        self._spawn(self._notifications())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._publisher.close()

    def start_job(self, fail: bool) -> str | None:
        """Called from the subscriber protocol for POST /demo/jobs; returns the task id."""
        if self._running_jobs >= self._settings.max_jobs:
            return None
        task_id = f"demo-{next(self._serial)}-{secrets.token_hex(3)}"
        self._running_jobs += 1
        self._spawn(self._job(task_id, fail))
        return task_id

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _job(self, task_id: str, fail: bool) -> None:
        step_s = self._settings.job_step_s
        try:
            tracker = self._publisher.track(task_id)
            await tracker.pending("queued")
            async with tracker as task:
                for step in range(1, JOB_STEPS + 1):
                    await asyncio.sleep(step_s)
                    if fail and step == FAIL_AT_STEP:
                        raise DemoJobFailed(
                            f"step {step} of {JOB_STEPS}: disk quota exceeded (simulated)"
                        )
                    if step < JOB_STEPS:  # leaving the block publishes completed at 100
                        await task.update(step * 100 // JOB_STEPS, f"step {step} of {JOB_STEPS}")
        except DemoJobFailed as exc:
            log.info("demo job %s failed as asked: %s", task_id, exc)
            await self._notify("error", f"Job {task_id} failed", str(exc))
        else:
            await self._notify("success", f"Job {task_id} completed", f"{JOB_STEPS} steps done")
        finally:
            self._running_jobs -= 1

    async def _counter(self) -> None:
        for value in itertools.count(1):
            try:
                stats = await self._publisher.stats()
                data = {"value": value, "connections": stats.get("connections")}
                await self._publisher.publish(COUNTER_TOPIC, data, event="count")
            except (PublishError, OSError, TimeoutError) as exc:
                log.debug("demo counter not published: %s", exc)
            await asyncio.sleep(self._settings.counter_interval_s)

    async def _notifications(self) -> None:
        for level, title, body in itertools.cycle(_SAMPLES):
            await asyncio.sleep(self._settings.notification_interval_s)
            await self._notify(level, title, body)

    async def _notify(self, level: str, title: str, body: str) -> None:
        data = {"level": level, "title": title, "body": body, "at": time.time()}
        try:
            await self._publisher.publish(NOTIFICATIONS_TOPIC, data, event="notification")
        except (PublishError, OSError, TimeoutError) as exc:
            log.debug("demo notification not published: %s", exc)


def start_demo(config: Config, pages: Pages, ambient: bool = True) -> DemoPublisher:
    """Start the demo publisher and let the pages serve /demo; call once the daemon is up.

    `ambient=False` (workers other than the first): jobs only, so the counter and the
    notifications are published once, not once per worker.
    """
    demo = DemoPublisher(config.control.socket, config.demo)
    pages.demo = demo
    if ambient:
        demo.start()
    log.info("demo page at /demo on the public listeners")
    return demo
