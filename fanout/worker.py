"""A worker process: subscribers on shared listeners, events from the supervisor.

The worker never encodes an event: it receives each frame, already encoded, over
its link, retains it (so a client may resume on any worker) and writes it to its
own subscribers. It asks the supervisor before admitting a connection, so limits
hold across workers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
from typing import Any, cast

from . import link, logs
from .access import Policy
from .config import parse_tcp
from .hub import Refusal, Route, Subscriber
from .protocol import SubscriberProtocol
from .server import Server, StartupError
from .sse import Frame

log = logging.getLogger("fanout.worker")


class WorkerLink(asyncio.Protocol):
    """The worker's end of the link; also its Gatekeeper."""

    def __init__(self) -> None:
        self.hello: asyncio.Future[link.Hello] = asyncio.get_running_loop().create_future()
        self.seeded = asyncio.Event()
        self.lost = asyncio.Event()
        self.server: WorkerServer | None = None
        self._decoder = link.Decoder()
        self._transport: asyncio.Transport | None = None
        self._waiting: dict[str, SubscriberProtocol] = {}
        # Messages that arrive with Hello, before the server they are for exists.
        self._backlog: list[link.Message] = []

    def attach(self, server: WorkerServer) -> None:
        self.server = server
        backlog, self._backlog = self._backlog, []
        for message in backlog:
            self._handle_safely(message)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()

    def send(self, message: link.Message) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(link.encode(message))

    # -- Gatekeeper -----------------------------------------------------------

    def ask(self, proto: SubscriberProtocol, sub: Subscriber, last_event_id: str | None) -> None:
        self._waiting[sub.id] = proto
        self.send(link.Admit(sub.id, sub.user, sorted(sub.topics)))

    def closed(self, sub: Subscriber) -> None:
        self.send(link.Closed(sub.id))

    # -- from the supervisor ----------------------------------------------------

    def data_received(self, data: bytes) -> None:
        for message in self._decoder.feed(data):
            if isinstance(message, link.Hello):
                self.hello.set_result(message)
            elif self.server is None:
                self._backlog.append(message)
            else:
                self._handle_safely(message)

    def _handle_safely(self, message: link.Message) -> None:
        # A bug in handling one message must not close the link: that would take
        # every client of this worker down with it.
        try:
            self._handle(message)
        except Exception:
            log.exception("failed to handle %s from the supervisor", type(message).__name__)

    def _handle(self, message: link.Message) -> None:
        if isinstance(message, link.Event):
            assert self.server is not None
            frame = Frame.from_parts(message.raw, message.chunked)
            route = Route(message.kind, message.key, message.topic)  # type: ignore[arg-type]
            self.server.hub.ingest(route, message.seq, frame)
        elif isinstance(message, link.Verdict):
            proto = self._waiting.pop(message.conn, None)
            if proto is not None:
                refusal = None
                if message.status:
                    refusal = Refusal(message.status, message.reason, tuple(message.headers))
                proto.admitted(refusal)
        elif isinstance(message, link.Evict):
            assert self.server is not None
            sub = self.server.hub.subscriber(message.conn)
            if sub is not None:
                self.server.hub.evict(sub, message.reason)
        elif isinstance(message, link.StatsQuery):
            assert self.server is not None
            self.send(link.StatsReply(message.n, self.server.worker_stats()))
        elif isinstance(message, link.Reload):
            assert self.server is not None
            self.server.apply(message.config)
        elif isinstance(message, link.Seed):
            assert self.server is not None
            self.server.hub.import_state(message.state)
            self.seeded.set()


class WorkerServer(Server):
    def __init__(self, hello: link.Hello, worker_link: WorkerLink) -> None:
        super().__init__(
            hello.config,
            epoch=hello.epoch,
            conn_prefix=f"{hello.epoch}.{os.getpid()}",
            own_admission=False,
        )
        self.index = hello.index
        self._hello = hello
        self.shared.gatekeeper = worker_link

    async def start(self) -> None:
        config = self.config
        # Read the key files (checked at load); `self.access.keys.reload()` re-reads them.
        access = self.access = Policy.from_config(config)
        hello = self._hello
        for listener, tcp, fd in zip(config.listener, hello.tcp, hello.unix_fds, strict=True):
            identity = access.for_listener(listener.trusted)
            factory = functools.partial(SubscriberProtocol, self.shared, identity)
            if tcp is not None:
                host, port = parse_tcp(tcp)
                # Each worker has its own socket on the port; the kernel spreads
                # new connections over them evenly (a shared socket would not).
                server = await self._loop.create_server(
                    factory, host, port, reuse_port=True, backlog=4096
                )
            else:
                assert fd is not None
                sock = socket.socket(fileno=fd)
                server = await self._loop.create_unix_server(factory, sock=sock, backlog=4096)
            self._servers.append(server)
        self._tick_handle = self._loop.call_soon(self._tick)

    def apply(self, config: Any) -> None:
        self._apply(config)

    def worker_stats(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": os.getpid(),
            **self.hub.counts(),
            **self.hub.stats.as_dict(),
        }


async def _unless_lost(worker_link: WorkerLink, waiting: asyncio.Future[Any]) -> bool:
    """Wait for `waiting`; False if the link is lost first (the supervisor is gone:
    a worker never outlives it, at any stage)."""
    lost = asyncio.ensure_future(worker_link.lost.wait())
    await asyncio.wait({waiting, lost}, return_when=asyncio.FIRST_COMPLETED)
    lost.cancel()
    if waiting.done():
        return True
    waiting.cancel()
    return False


async def run(link_fd: int) -> None:
    loop = asyncio.get_running_loop()
    worker_link = WorkerLink()
    await loop.create_unix_connection(lambda: worker_link, sock=socket.socket(fileno=link_fd))
    if not await _unless_lost(worker_link, worker_link.hello):
        return
    hello = worker_link.hello.result()
    logs.setup(hello.config.log.level, tag=f"w{hello.index}")
    server = WorkerServer(hello, worker_link)
    worker_link.attach(server)
    if not await _unless_lost(worker_link, asyncio.ensure_future(worker_link.seeded.wait())):
        log.error("worker %d: the supervisor went away before the seed", hello.index)
        return
    try:
        await server.start()
    except OSError as exc:
        raise StartupError(f"worker {hello.index} cannot listen: {exc.strerror}") from None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    # The supervisor forwards reloads as Reload messages with the file it read.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    worker_link.send(link.Ready(os.getpid()))
    log.info("worker %d ready (pid %d)", hello.index, os.getpid())
    lost = asyncio.ensure_future(worker_link.lost.wait())
    stopped = asyncio.ensure_future(server.wait_stopped())
    demo = None
    if hello.config.demo.enabled:
        from .demo import start_demo

        # Jobs start on whichever worker serves the page; the ambient counter and
        # notifications come from the first worker only.
        demo = start_demo(hello.config, server.shared.pages, ambient=hello.index == 1)
    await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if lost.done() and not stopped.done():
        log.warning("supervisor is gone: draining")
    lost.cancel()
    stopped.cancel()
    if demo is not None:
        await demo.stop()
    await server.drain(server.config.stream.shutdown_timeout_s)
