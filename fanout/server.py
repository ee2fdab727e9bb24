"""The single process: one Core, its streams and its control socket (optionally on
the Redis backplane). `serve` picks the composition the config asks for."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from typing import Any

from .config import Config, worker_count
from .control import ControlApi, ControlProtocol
from .core import Core
from .daemon import Daemon, StartupError, check_open_files, run
from .demo import start_demo
from .gates import Gate, LocalGate
from .ids import new_epoch
from .ops import start_ops
from .publishing import Emit, Events, Publishing
from .route import Delivery
from .streams import Streams

__all__ = ["Server", "StartupError", "serve"]


def flush_scheduler(daemon: Daemon) -> Callable[[Callable[[], None]], object]:
    interval_ms = daemon.config.stream.flush_interval_ms
    if interval_ms <= 0:
        return daemon.loop.call_soon
    delay = interval_ms / 1000
    return lambda flush: daemon.loop.call_later(delay, flush)


def local_emit(core: Core) -> Emit:
    def emit(events: Events) -> list[Delivery]:
        return [core.publish(route, event, payload) for route, event, payload in events]

    return emit


class Server:
    def __init__(
        self, config: Config, config_path: str | None = None, log_level: str | None = None
    ) -> None:
        self.daemon = daemon = Daemon(config, config_path, log_level)
        epoch = new_epoch()
        # On a backplane a connection id must be unique across daemons (a `send` to
        # it travels through the shared stream).
        prefix = secrets.token_hex(5) if config.backplane.redis else epoch
        self.core = core = Core(
            config,
            epoch=epoch,
            conn_prefix=prefix,
            clock=daemon.loop.time,
            schedule_flush=flush_scheduler(daemon),
        )
        self.backplane: Any = None
        gate: Gate = LocalGate(core)
        emit = local_emit(core)
        holds: Callable[[str], bool | None] = lambda conn: core.hub.subscriber(conn) is not None  # noqa: E731
        if config.backplane.redis:
            from .backplane import Backplane
            from .on_backplane import BackplaneGate, CoreSink, stream_emit

            self.backplane = Backplane(
                config.backplane, lambda: self.daemon.config.limits, CoreSink(core)
            )
            gate = BackplaneGate(core, self.backplane)
            emit = stream_emit(self.backplane, core.hub.count_for, lambda: core.hub.connections)
            holds = lambda conn: True if core.hub.subscriber(conn) else None  # noqa: E731
        self.streams = Streams(daemon, core, gate)
        self.shared = self.streams.shared
        self.publishing = Publishing(emit, holds, lambda: core.draining)
        self.demo: Any = None
        self.ops: Any = None

    @property
    def listeners(self) -> list[str]:
        return self.daemon.listeners

    async def start(self) -> None:
        if self.backplane is not None:
            from . import on_backplane

            await on_backplane.start(self.backplane)
        check_open_files(self.daemon.config.limits.max_connections)
        await self.streams.listen()
        config = self.daemon.config
        api = ControlApi(self.publishing, self.snapshot)
        control = functools.partial(ControlProtocol, api, config.control.max_body_bytes)
        await self.daemon.listen_unix(config.control.socket, config.control.socket_mode, control)
        self.streams.start()
        if config.demo.enabled:
            # Started once the control socket listens, since it publishes through it.
            self.demo = start_demo(config, self.shared.pages)
        if config.ops.enabled:
            self.ops = start_ops(config, self.shared.pages)

    def snapshot(self) -> dict[str, Any]:
        core = self.core
        return {
            **self.daemon.info(),
            "epoch": core.ids.epoch,
            **core.counts(),
            **core.stats.as_dict(),
        }

    def describe(self) -> str:
        return "serving on " + ", ".join(self.daemon.listeners[:-1])

    async def drain(self) -> None:
        for publisher in (self.demo, self.ops):
            if publisher is not None:
                await publisher.stop()
        # The config read now: a SIGHUP may have changed the drain timeout.
        timeout = self.daemon.config.stream.shutdown_timeout_s
        await self.streams.drain(timeout, self.daemon.signals.force)
        if self.backplane is not None:
            await self.backplane.stop()
        self.daemon.cleanup()


async def serve(
    config: Config,
    ready: Callable[[Any], None] | None = None,
    *,
    config_path: str | None = None,
    log_level: str | None = None,
) -> None:
    if worker_count(config) > 1:
        from .supervisor import Supervisor

        await run(Supervisor(config, config_path, log_level), ready)
    else:
        await run(Server(config, config_path, log_level), ready)
