"""Publishing from web frameworks and task queues: Django, Starlette/FastAPI, Celery.

Each module imports its framework, and nothing here is imported by the daemon, so
none of them is a dependency of fanout: install the extra you use
(`pip install 'fanout[django]'`, `[starlette]` or `[celery]`).
"""

from __future__ import annotations

import os
import threading

from ..client import Publisher

_lock = threading.Lock()
_publishers: dict[tuple[int, str], Publisher] = {}


def process_publisher(socket_path: str) -> Publisher:
    """One sync Publisher per process and socket, shared by its threads.

    Keyed by pid too: gunicorn (with --preload) and Celery's prefork pool fork after
    the app is imported, and a connection inherited across a fork would be shared by
    two processes writing requests into one socket. A child gets its own.
    """
    key = (os.getpid(), socket_path)
    with _lock:
        publisher = _publishers.get(key)
        if publisher is None:
            publisher = _publishers[key] = Publisher(socket_path)
        return publisher


def close_process_publishers() -> None:
    """Close the shared Publishers (at shutdown, or between tests); new ones open on use."""
    with _lock:
        publishers = list(_publishers.values())
        _publishers.clear()
    for publisher in publishers:
        publisher.close()
