"""The Celery app and tasks of tests/integration/test_integrations_celery.py.

Imported by the test (to queue tasks) and by the real `celery worker` it starts;
both find the broker and the control socket in the environment the test sets.
"""

from __future__ import annotations

import os

from celery import Celery

from fanout.integrations.celery import track

app = Celery("fanout_tests")
app.conf.update(
    broker_url=os.environ.get("FANOUT_TEST_BROKER", "memory://"),
    result_backend=os.environ.get("FANOUT_TEST_BROKER", "cache+memory://"),
    broker_connection_retry_on_startup=True,
    # Read by fanout.integrations.celery.get_publisher.
    fanout_socket=os.environ.get("FANOUT_TEST_SOCKET", ""),
)


@app.task(bind=True)
def process_items(self, n: int) -> int:
    with track(self) as progress:
        for i in range(n):
            progress.update(round(100 * (i + 1) / n, 1), f"item {i + 1} of {n}")
    return n


@app.task(bind=True)
def fail_halfway(self) -> None:
    with track(self) as progress:
        progress.update(50, "half way")
        raise ValueError("disk full")
