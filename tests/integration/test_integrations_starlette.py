"""fanout.integrations.starlette: a FastAPI app on a real uvicorn server publishes to the daemon.

uvicorn runs in the test's event loop on a socket bound to port 0, so the test can
watch the lifespan: the publisher exists while the server runs and is closed and
removed from app.state when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fanout.client import AsyncPublisher
from fanout.integrations.starlette import fanout_lifespan, get_publisher, hold_publisher
from tests.sse_client import subscribe

pytestmark = pytest.mark.integration


def orders_app(control: str, seen: list[AsyncPublisher]) -> FastAPI:
    app = FastAPI(lifespan=fanout_lifespan(control))

    @app.post("/orders/{n}")
    async def create_order(
        n: int, publisher: Annotated[AsyncPublisher, Depends(get_publisher)]
    ) -> dict[str, Any]:
        seen.append(publisher)
        return await publisher.publish("orders", {"n": n}, event="created")

    @app.post("/state")
    async def from_lifespan_state(request: Request) -> dict[str, Any]:
        # The lifespan also yields the publisher as state, copied into each request.
        seen.append(request.state.fanout)
        return await request.state.fanout.publish("orders", "via state", event="state")

    return app


class UvicornServer:
    """A real uvicorn server for `app` in this event loop, on 127.0.0.1 port 0."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, lifespan="on", ws="none", http="h11", log_level="warning")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> UvicornServer:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        async with asyncio.timeout(10):
            while not self.server.started:
                if self.task.done():
                    self.task.result()  # startup failed: raise its error
                await asyncio.sleep(0.01)  # a bounded wait for the condition, not for time
        return self

    async def stop(self) -> None:
        """Stops the server, which runs the lifespan's exit."""
        if self.task is not None:
            self.server.should_exit = True
            async with asyncio.timeout(10):
                await self.task
            self.task = None
        self.sock.close()


@pytest.fixture
async def uvicorn_server() -> AsyncIterator[Callable[[Any], Awaitable[UvicornServer]]]:
    servers: list[UvicornServer] = []

    async def start(app: Any) -> UvicornServer:
        servers.append(UvicornServer(app))
        return await servers[-1].start()

    yield start
    for server in servers:
        await server.stop()


async def test_a_fastapi_endpoint_publishes_through_the_lifespan_publisher(daemon, uvicorn_server):
    seen: list[AsyncPublisher] = []
    app = orders_app(daemon.control, seen)
    stream = await subscribe(daemon.host, daemon.port, "/events?topic=orders")
    assert (await stream.next()).event == "connected"

    server = await uvicorn_server(app)
    held = app.state.fanout
    assert isinstance(held, AsyncPublisher)
    async with httpx.AsyncClient(base_url=server.url) as http:
        # Concurrent requests share the one publisher (its requests take turns).
        answers = await asyncio.gather(*(http.post(f"/orders/{n}") for n in range(20)))
        state_answer = await http.post("/state")
    assert [a.status_code for a in answers] == [200] * 20
    assert state_answer.status_code == 200

    events = await stream.events(21)
    assert sorted(e.json()["n"] for e in events[:20]) == list(range(20))
    assert {e.event for e in events[:20]} == {"created"}
    assert sorted(e.id for e in events[:20]) == sorted(a.json()["id"] for a in answers)
    assert (events[20].event, events[20].json()) == ("state", "via state")
    assert all(p is held for p in seen)
    assert len(seen) == 21

    await server.stop()
    assert not hasattr(app.state, "fanout")
    stream.close()


async def test_hold_publisher_composes_with_an_app_s_own_lifespan(daemon, uvicorn_server):
    order: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with hold_publisher(app, daemon.control):
            order.append("started")
            yield
        order.append("publisher closed")

    async def ping(request: Request) -> JSONResponse:
        result = await get_publisher(request).publish("pings", 1, event="ping")
        return JSONResponse(result)

    app = Starlette(routes=[Route("/ping", ping, methods=["POST"])], lifespan=lifespan)
    stream = await subscribe(daemon.host, daemon.port, "/events?topic=pings")
    assert (await stream.next()).event == "connected"
    server = await uvicorn_server(app)
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.post("/ping")
    assert answer.status_code == 200
    event = await stream.next()
    assert (event.event, event.id) == ("ping", answer.json()["id"])
    await server.stop()
    assert order == ["started", "publisher closed"]
    stream.close()


async def test_an_app_without_the_lifespan_is_told_what_is_missing():
    app = FastAPI()

    @app.get("/")
    async def endpoint(publisher: Annotated[AsyncPublisher, Depends(get_publisher)]) -> None:
        raise AssertionError("not reached")

    # httpx's ASGI transport runs no lifespan: exactly the mistake to report.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app"
    ) as http:
        with pytest.raises(RuntimeError, match="lifespan=fanout_lifespan"):
            await http.get("/")
