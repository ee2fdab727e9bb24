"""Starlette and FastAPI: one AsyncPublisher for the app's lifetime.

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from fanout.client import AsyncPublisher
    from fanout.integrations.starlette import fanout_lifespan, get_publisher

    Fanout = Annotated[AsyncPublisher, Depends(get_publisher)]
    app = FastAPI(lifespan=fanout_lifespan("/run/fanout/control.sock"))

    @app.post("/orders")
    async def create(publisher: Fanout):
        await publisher.publish("orders", {"id": 42}, event="created")

The publisher is opened in the lifespan, on the server's event loop, and closed
when the server shuts down: one keep-alive connection to the control socket for
the whole app instead of one per request. Its requests take turns on that
connection; `request_timeout` bounds each one (PublishError or TimeoutError after it).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import HTTPConnection

from ..client import DEFAULT_SOCKET, AsyncPublisher

STATE_KEY = "fanout"


@contextlib.asynccontextmanager
async def hold_publisher(
    app: Any, socket_path: str = DEFAULT_SOCKET, *, request_timeout: float = 5.0
) -> AsyncIterator[AsyncPublisher]:
    """Put an AsyncPublisher on `app.state.fanout` for the block; for your own lifespan:

    @asynccontextmanager
    async def lifespan(app):
        async with hold_publisher(app, "/run/fanout/control.sock"), my_db_pool(app):
            yield
    """
    publisher = AsyncPublisher(socket_path, request_timeout)
    setattr(app.state, STATE_KEY, publisher)
    try:
        yield publisher
    finally:
        await publisher.close()
        delattr(app.state, STATE_KEY)


def fanout_lifespan(
    socket_path: str = DEFAULT_SOCKET, *, request_timeout: float = 5.0
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for `Starlette(lifespan=...)` / `FastAPI(lifespan=...)`.

    Besides app.state.fanout, it yields the publisher as lifespan state, which
    Starlette copies into each request's `request.state.fanout`.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with hold_publisher(app, socket_path, request_timeout=request_timeout) as publisher:
            yield {STATE_KEY: publisher}

    return lifespan


def get_publisher(connection: HTTPConnection) -> AsyncPublisher:
    """The app's publisher, for `Depends(get_publisher)` or a plain Starlette endpoint."""
    publisher = getattr(connection.app.state, STATE_KEY, None)
    if not isinstance(publisher, AsyncPublisher):
        raise RuntimeError(
            "no fanout publisher on app.state: pass lifespan=fanout_lifespan(...) to the app,"
            " or enter hold_publisher(app) in your own lifespan"
        )
    return publisher
