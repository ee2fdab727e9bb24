"""A worker process: subscribers on shared listeners, events from the supervisor.

The worker never assigns an id: it receives each frame, already encoded, over its
link, retains it (so a client may resume on any worker) and writes it to its own
subscribers. Its gate is the link: it asks the supervisor before admitting a
connection, so limits hold across workers (and across daemons on the backplane).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from typing import Any, cast

from . import link, logs
from .admission import Refusal
from .core import Core
from .daemon import Daemon, StartupError
from .gates import Admittable
from .hub import Subscriber
from .route import Route
from .server import flush_scheduler
from .sse import Frame
from .streams import Streams

log = logging.getLogger("fanout.worker")


class WorkerLink(asyncio.Protocol):
    """The worker's end of the link; also its Gate."""

    def __init__(self) -> None:
        self.hello: asyncio.Future[link.Hello] = asyncio.get_running_loop().create_future()
        self.seeded = asyncio.Event()
        self.lost = asyncio.Event()
        self.worker: WorkerServer | None = None
        self._decoder = link.Decoder()
        self._transport: asyncio.Transport | None = None
        self._waiting: dict[str, Admittable] = {}
        # Messages that arrive with Hello, before the worker they are for exists.
        self._backlog: list[link.Message] = []

    def attach(self, worker: WorkerServer) -> None:
        self.worker = worker
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

    # -- Gate -----------------------------------------------------------------

    def ask(self, proto: Admittable, sub: Subscriber, last_event_id: str | None) -> None:
        self._waiting[sub.id] = proto
        self.send(link.Admit(sub.id, sub.user, sorted(sub.topics), last_event_id))

    def closed(self, sub: Subscriber) -> None:
        self.send(link.Closed(sub.id))

    # -- from the supervisor ----------------------------------------------------

    def data_received(self, data: bytes) -> None:
        for message in self._decoder.feed(data):
            if isinstance(message, link.Hello):
                self.hello.set_result(message)
            elif self.worker is None:
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
        assert self.worker is not None
        core = self.worker.core
        if isinstance(message, link.Event):
            frame = Frame.from_parts(message.raw, message.chunked)
            route = Route(message.kind, message.key, message.topic)  # type: ignore[arg-type]
            core.ingest(route, message.seq, frame)
        elif isinstance(message, link.Verdict):
            proto = self._waiting.pop(message.conn, None)
            if proto is not None:
                refusal = None
                if message.status:
                    refusal = Refusal(message.status, message.reason, tuple(message.headers))
                backfill = [(s, Frame.from_parts(r, c)) for s, r, c in message.backfill]
                proto.admitted(refusal, backfill or None)
        elif isinstance(message, link.Evict):
            sub = core.hub.subscriber(message.conn)
            if sub is not None:
                core.hub.evict(sub, message.reason)
        elif isinstance(message, link.StatsQuery):
            self.send(link.StatsReply(message.n, self.worker.stats()))
        elif isinstance(message, link.Reload):
            self.worker.daemon.apply(message.config)
        elif isinstance(message, link.Seed):
            core.retention.restore(message.state, self.worker.daemon.loop.time())
            core.ids.observe(message.state.head)
            self.seeded.set()
        elif isinstance(message, link.NewEpoch):
            core.new_epoch(message.epoch)
        elif isinstance(message, link.Gap):
            core.gap(message.upto)


class WorkerServer:
    def __init__(self, hello: link.Hello, worker_link: WorkerLink) -> None:
        self.index = hello.index
        self._hello = hello
        self.daemon = daemon = Daemon(hello.config)
        self.core = Core(
            hello.config,
            epoch=hello.epoch,
            # Connection ids are unique per process (the worker's pid is in them) and,
            # on a backplane, across daemons (a `send` travels through the stream).
            conn_prefix=f"{secrets.token_hex(5) if hello.config.backplane.redis else hello.epoch}"
            f".{os.getpid()}",
            clock=daemon.loop.time,
            schedule_flush=flush_scheduler(daemon),
        )
        self.streams = Streams(daemon, self.core, worker_link)

    async def start(self) -> None:
        await self.streams.adopt(self._hello.tcp, self._hello.unix_fds)
        self.streams.start()

    def stats(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": os.getpid(),
            **self.core.counts(),
            **self.core.stats.as_dict(),
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
    worker = WorkerServer(hello, worker_link)
    worker_link.attach(worker)
    if not await _unless_lost(worker_link, asyncio.ensure_future(worker_link.seeded.wait())):
        log.error("worker %d: the supervisor went away before the seed", hello.index)
        return
    try:
        await worker.start()
    except (OSError, StartupError) as exc:
        raise StartupError(f"worker {hello.index} cannot listen: {exc}") from None
    stop = worker.daemon.signals.stop
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The supervisor forwards reloads as Reload messages with the file it read.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    worker_link.send(link.Ready(os.getpid()))
    log.info("worker %d ready (pid %d)", hello.index, os.getpid())
    lost = asyncio.ensure_future(worker_link.lost.wait())
    stopped = asyncio.ensure_future(stop.wait())
    demo = None
    if hello.config.demo.enabled:
        from .demo import start_demo

        # Jobs start on whichever worker serves the page; the ambient counter and
        # notifications come from the first worker only.
        demo = start_demo(hello.config, worker.streams.shared.pages, ambient=hello.index == 1)
    ops = None
    if hello.config.ops.enabled:
        from .ops import start_ops

        # Every worker serves /ops; the first publishes the (all-worker) snapshot.
        ops = start_ops(hello.config, worker.streams.shared.pages, publish=hello.index == 1)
    await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if lost.done() and not stopped.done():
        log.warning("supervisor is gone: draining")
    lost.cancel()
    stopped.cancel()
    if demo is not None:
        await demo.stop()
    if ops is not None:
        await ops.stop()
    await worker.streams.drain(
        worker.daemon.config.stream.shutdown_timeout_s, worker.daemon.signals.force
    )
    worker.daemon.cleanup()
