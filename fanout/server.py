"""Start and stop: listeners, the wheel's one timer, signals, graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, logs, systemd
from .access import Policy
from .config import Config, ConfigError, load, parse_tcp
from .control import Backend, ControlApi, ControlProtocol
from .demo import start_demo
from .hub import Hub
from .ids import new_epoch
from .protocol import Shared, SubscriberProtocol, TimerTarget
from .reload import plan as plan_reload
from .wheel import Wheel

if TYPE_CHECKING:
    from .backplane import Backplane

log = logging.getLogger("fanout.server")

# How often retained events are checked for age.
EXPIRE_EVERY_S = 1.0


class StartupError(Exception):
    """The daemon cannot start; the message is one line, for the user."""


def prepare_unix_path(path: str) -> None:
    """Make room for a Unix socket: refuse a live one, replace a stale one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = p.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"{path} exists and is not a socket; remove it or choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("replacing stale socket %s left by a process that is gone", path)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
        return
    except OSError as exc:
        raise StartupError(f"cannot check existing socket {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise StartupError(f"another process is listening on {path}; stop it or choose another path")


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    # A socket file is created with the process umask; creating it under a strict
    # one means it is never, even briefly, more open than configured.
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def reread_config(path: str | None, draining: bool) -> Config | None:
    """On SIGHUP: the file's settings, or None (said in the log) to keep the running ones.

    Tells systemd it is reloading; on None it has been told it is ready again.
    """
    if draining:
        log.info("received SIGHUP while draining: ignored")
        return None
    if path is None:
        log.warning("received SIGHUP, but no config file was given (-c): nothing to reload")
        return None
    systemd.reloading()
    try:
        return load(path)
    except ConfigError as exc:
        log.error("reload failed, keeping the running settings: %s", exc)
        systemd.ready("reload failed")
        return None


class StopSignals:
    """SIGTERM or SIGINT start the drain; a second one forces it (as uvicorn's
    handle_exit); SIGHUP reloads. One per process: the daemon or the supervisor."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        self._count = 0

    def install(self, loop: asyncio.AbstractEventLoop, reload: Callable[[], None]) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, reload)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._count += 1
        if self._count == 1:
            log.info("received %s: draining", sig.name)
            self.stop.set()
        else:
            log.warning("received %s again: exiting now", sig.name)
            self.force.set()


class Server:
    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        log_level: str | None = None,
        *,
        epoch: str | None = None,
        conn_prefix: str | None = None,
        own_admission: bool = True,
    ) -> None:
        self.config = config
        # SIGHUP re-reads this file; `log_level` is a --log-level that outranks it.
        self._config_path = config_path
        self._log_level = log_level
        self._loop = asyncio.get_running_loop()
        self._started = time.time()
        self._signals = StopSignals()
        self._stop, self._force = self._signals.stop, self._signals.force
        self._servers: list[asyncio.Server] = []
        self._unix_paths: list[str] = []
        self.listeners: list[str] = []
        limits, stream = config.limits, config.stream
        self.hub = Hub(
            epoch=epoch or new_epoch(),
            limits=limits,
            stream=stream,
            replay=config.replay,
            clock=self._loop.time,
            schedule_flush=self._flush_scheduler(stream.flush_interval_ms),
            # On a backplane, a connection id must be unique across daemons (a
            # `send` to it travels through the shared stream).
            conn_prefix=conn_prefix or (secrets.token_hex(5) if config.backplane.redis else None),
            own_admission=own_admission,
        )
        tick = max(0.005, min(0.25, stream.heartbeat_interval_s / 8, limits.header_timeout_s / 8))
        self.wheel: Wheel[TimerTarget] = Wheel(tick, 512, self._loop.time())
        self.shared = Shared(
            hub=self.hub,
            wheel=self.wheel,
            clock=self._loop.time,
            max_header_bytes=limits.max_header_bytes,
            header_timeout_s=limits.header_timeout_s,
            heartbeat_interval_s=stream.heartbeat_interval_s,
            max_topics=limits.max_topics_per_connection,
            send_buffer_bytes=limits.socket_send_buffer_bytes,
            connections=set(),
        )
        self._next_expire = 0.0
        self._tick_handle: asyncio.Handle | None = None
        self.backplane: Backplane | None = None

    def _flush_scheduler(self, interval_ms: float) -> Callable[[Callable[[], None]], object]:
        if interval_ms <= 0:
            return self._loop.call_soon
        delay = interval_ms / 1000
        return lambda flush: self._loop.call_later(delay, flush)

    # -- start ----------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        backend: Backend = self.hub
        if config.backplane.redis:
            # First: the epoch and the recent events come from Redis, and must be
            # in place before the first subscriber or publisher is let in.
            from .backplane import Backplane, BackplaneBackend, BackplaneGate, Unavailable

            self.backplane = Backplane(config.backplane, config.limits, self.hub)
            try:
                await self.backplane.start()
            except Unavailable as exc:
                raise StartupError(str(exc)) from None
            self.shared.gatekeeper = BackplaneGate(
                self.hub, self.backplane, lambda: self.config.limits
            )
            backend = BackplaneBackend(self.hub, self.backplane)
        # Read the key files (checked at load); `self.access.keys.reload()` re-reads them.
        access = self.access = Policy.from_config(config)
        for listener in config.listener:
            identity = access.for_listener(listener.trusted)
            factory = functools.partial(SubscriberProtocol, self.shared, identity)
            if listener.tcp:
                await self._listen_tcp(listener.tcp, factory)
            else:
                await self._listen_unix(listener.unix, listener.unix_mode, factory)
        api = ControlApi(backend, self.snapshot)
        control = functools.partial(ControlProtocol, api, config.control.max_body_bytes)
        await self._listen_unix(config.control.socket, config.control.socket_mode, control)
        self._tick_handle = self._loop.call_soon(self._tick)

    async def _listen_tcp(self, address: str, factory: Callable[[], asyncio.Protocol]) -> None:
        host, port = parse_tcp(address)
        try:
            server = await self._loop.create_server(
                factory, host, port, reuse_address=True, backlog=4096
            )
        except OSError as exc:
            raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None
        self._servers.append(server)
        for sock in server.sockets:
            name = sock.getsockname()
            shown = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
            self.listeners.append(f"http://{shown}:{name[1]}")

    async def _listen_unix(
        self, path: str, mode: int, factory: Callable[[], asyncio.Protocol]
    ) -> None:
        prepare_unix_path(path)
        try:
            with _umask(0o177):
                server = await self._loop.create_unix_server(factory, path, backlog=4096)
            os.chmod(path, mode)
        except OSError as exc:
            raise StartupError(f"cannot listen on {path}: {exc.strerror}") from None
        self._servers.append(server)
        self._unix_paths.append(path)
        self.listeners.append(f"unix:{path}")

    def snapshot(self) -> dict[str, Any]:
        hub = self.hub
        return {**self.info(), **hub.counts(), **hub.stats.as_dict()}

    def info(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "epoch": self.hub.epoch,
            "uptime_s": round(time.time() - self._started, 3),
            "listeners": self.listeners,
        }

    # -- the one timer ------------------------------------------------------

    def _tick(self) -> None:
        now = self._loop.time()
        for item in self.wheel.advance(now):
            try:
                item.on_timer(now)
            except Exception:
                log.exception("timer callback failed")
        if now >= self._next_expire:
            self.hub.expire()
            self._next_expire = now + EXPIRE_EVERY_S
        self._tick_handle = self._loop.call_at(now + self.wheel.tick_s, self._tick)

    # -- stop -----------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        self._signals.install(self._loop, self.reload)

    # -- reload (SIGHUP) -------------------------------------------------------

    def reload(self) -> None:
        """Re-read the config file; apply what can change without dropping anyone."""
        new = reread_config(self._config_path, self._stop.is_set())
        if new is not None:
            self._apply(new)
            systemd.ready("reloaded")

    def _apply(self, new: Config) -> None:
        plan = plan_reload(self.config, new)
        self.config = config = plan.config
        limits = config.limits
        self.hub.update_limits(limits)
        shared = self.shared
        # New requests and the next heartbeat of each stream read these; a stream's
        # already scheduled heartbeat keeps its time (at most one old interval).
        # The wheel's tick stays as sized at start: heartbeats may land up to one
        # tick (<= 0.25 s) late if the new interval is much shorter.
        shared.max_header_bytes = limits.max_header_bytes
        shared.header_timeout_s = limits.header_timeout_s
        shared.max_topics = limits.max_topics_per_connection
        shared.heartbeat_interval_s = config.stream.heartbeat_interval_s
        if self._log_level is None:
            logs.set_level(config.log.level)
        for key in plan.restart:
            log.warning("reload: %s changed but needs a restart; keeping the running value", key)
        log.info(
            "reloaded %s: %s",
            self._config_path or "settings from the supervisor",
            ", ".join(plan.applied) if plan.applied else "no live setting changed",
        )

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting, end every stream, wait for the sockets to go (bounded)."""
        for server in self._servers:
            server.close()
        shared = self.shared
        shared.all_closed = asyncio.Event()
        for proto in list(shared.connections):
            proto.close_if_reading()
        streams = self.hub.shutdown()
        if streams:
            log.info("ending %d streams", streams)
        if shared.connections:
            # Streams close once their buffers are written; a peer that stopped
            # reading is cut at the deadline, or at once on a second signal.
            waits = {
                asyncio.ensure_future(shared.all_closed.wait()),
                asyncio.ensure_future(self._force.wait()),
            }
            _, pending = await asyncio.wait(
                waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            for proto in list(shared.connections):
                proto.abort()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self.backplane is not None:
            await self.backplane.stop()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


async def serve(
    config: Config,
    ready: Callable[[Server], None] | None = None,
    *,
    config_path: str | None = None,
    log_level: str | None = None,
) -> None:
    server = Server(config, config_path, log_level)
    try:
        await server.start()
    except BaseException:
        await server.drain(0)
        raise
    server.install_signal_handlers()
    log.info(
        "fanout %s ready: subscribers on %s; control on unix:%s",
        __version__,
        ", ".join(server.listeners[:-1]),
        config.control.socket,
    )
    if ready is not None:
        ready(server)
    systemd.ready(f"serving on {', '.join(server.listeners[:-1])}")
    # Started once the control socket listens, since it publishes through it.
    demo = start_demo(config, server.shared.pages) if config.demo.enabled else None
    await server.wait_stopped()
    systemd.stopping()
    if demo is not None:
        await demo.stop()
    # server.config: a SIGHUP may have changed the drain timeout.
    await server.drain(server.config.stream.shutdown_timeout_s)
    log.info("stopped")
