"""The subscriber side of a process: the public listeners, the wheel's one timer, the
drain of streams. Run by the single process, every worker and a backplane daemon."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable

from .access import Policy
from .config import Config, Listener
from .core import Core
from .daemon import Daemon, descriptor_cap
from .gates import Gate
from .ipguard import IpGuard
from .protocol import Shared, SubscriberProtocol, TimerTarget
from .tokens import KeyFileError
from .wheel import Wheel

log = logging.getLogger("fanout.server")

# How often retained events are checked for age.
EXPIRE_EVERY_S = 1.0


class Streams:
    def __init__(self, daemon: Daemon, core: Core, gate: Gate) -> None:
        config = daemon.config
        limits, stream = config.limits, config.stream
        self._daemon = daemon
        self._loop = daemon.loop
        self.core = core
        tick = max(0.005, min(0.25, stream.heartbeat_interval_s / 8, limits.header_timeout_s / 8))
        self.wheel: Wheel[TimerTarget] = Wheel(tick, 512, self._loop.time())
        self.shared = Shared(
            core=core,
            gate=gate,
            wheel=self.wheel,
            clock=self._loop.time,
            max_header_bytes=limits.max_header_bytes,
            header_timeout_s=limits.header_timeout_s,
            heartbeat_interval_s=stream.heartbeat_interval_s,
            max_topics=limits.max_topics_per_connection,
            send_buffer_bytes=limits.socket_send_buffer_bytes,
            connections=set(),
            max_open=descriptor_cap(limits.max_connections),
            ipguard=IpGuard(
                limits.max_connections_per_ip,
                limits.connects_per_ip_per_s,
                limits.connect_burst_per_ip,
                limits.ipv6_prefix_len,
                self._loop.time,
            ),
            retry_after_s=limits.retry_after_s,
        )
        self._next_expire = 0.0
        self._tick_handle: asyncio.Handle | None = None
        # [auth] and [cors]; the key files were checked when the config was loaded.
        self.access = Policy.from_config(config)
        daemon.on_reload(self.apply)

    def factory(self, listener: Listener) -> Callable[[], SubscriberProtocol]:
        identity = self.access.for_listener(listener.trusted)
        return functools.partial(SubscriberProtocol, self.shared, identity)

    async def listen(self) -> None:
        """Bind every configured public listener (a process of its own)."""
        for listener in self._daemon.config.listener:
            if listener.tcp:
                await self._daemon.listen_tcp(listener.tcp, self.factory(listener))
            else:
                await self._daemon.listen_unix(
                    listener.unix, listener.unix_mode, self.factory(listener)
                )

    async def adopt(self, tcp: list[str | None], unix_fds: list[int | None]) -> None:
        """A worker: a SO_REUSEPORT socket of its own on each TCP port the supervisor
        reserved (the kernel spreads connections over them evenly), and the Unix
        listeners it inherited."""
        for listener, address, fd in zip(self._daemon.config.listener, tcp, unix_fds, strict=True):
            factory = self.factory(listener)
            if address is not None:
                await self._daemon.listen_tcp(address, factory, reuse_port=True)
            else:
                assert fd is not None
                await self._daemon.serve_socket(socket.socket(fileno=fd), factory)

    def start(self) -> None:
        self._tick_handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        for item in self.wheel.advance(now):
            try:
                item.on_timer(now)
            except Exception:
                log.exception("timer callback failed")
        if now >= self._next_expire:
            self.core.expire()
            self._next_expire = now + EXPIRE_EVERY_S
        self._tick_handle = self._loop.call_at(now + self.wheel.tick_s, self._tick)

    def apply(self, config: Config) -> None:
        """New requests and the next heartbeat of each stream read these; a stream's
        already scheduled heartbeat keeps its time (at most one old interval). The
        wheel's tick stays as sized at start: heartbeats may land up to one tick
        (<= 0.25 s) late if the new interval is much shorter."""
        limits = config.limits
        self.core.hub.limits = limits
        shared = self.shared
        shared.max_header_bytes = limits.max_header_bytes
        shared.header_timeout_s = limits.header_timeout_s
        shared.max_topics = limits.max_topics_per_connection
        shared.heartbeat_interval_s = config.stream.heartbeat_interval_s
        shared.max_open = descriptor_cap(limits.max_connections)
        shared.retry_after_s = limits.retry_after_s
        guard = shared.ipguard
        guard.max_per_ip = limits.max_connections_per_ip
        guard.rate = limits.connects_per_ip_per_s
        guard.burst = limits.connect_burst_per_ip
        keys = self.access.keys
        if keys is not None:
            # Every SIGHUP re-reads the key files (a rotated JWKS), all or nothing.
            try:
                keys.reload()
                log.info("reloaded the token keys")
            except KeyFileError as exc:
                log.error("token keys not reloaded, keeping the old ones: %s", exc)

    async def drain(self, timeout_s: float, force: asyncio.Event) -> None:
        """Stop accepting, end every stream, wait for the sockets to go (bounded)."""
        self._daemon.stop_accepting()
        self.core.draining = True
        shared = self.shared
        shared.all_closed = asyncio.Event()
        for proto in list(shared.connections):
            proto.close_if_reading()
        streams = self.core.hub.disconnect_all()
        if streams:
            log.info("ending %d streams", streams)
        if shared.connections:
            # Streams close once their buffers are written; a peer that stopped
            # reading is cut at the deadline, or at once on a second signal.
            waits = {
                asyncio.ensure_future(shared.all_closed.wait()),
                asyncio.ensure_future(force.wait()),
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
