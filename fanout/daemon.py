"""The plumbing of a serving process, written once: listeners, signals, reload, drain.

The single process and the supervisor each build one Daemon and hang their parts on
it: every part that holds a setting registers for reloads, so a SIGHUP reaches all of
them; `run` is the life of the process, from start to the end of the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from . import __version__, logs, systemd
from .config import Config, ConfigError, load, parse_tcp
from .reload import plan as plan_reload

log = logging.getLogger("fanout.server")


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


# Descriptors kept free of public connections: the control socket and its clients,
# listeners, log files, a worker's link, Redis, the kernel's odds and ends. With
# them free, a flood of public connections never locks the publishers out.
RESERVED_FDS = 64


def connection_budget(wanted: int) -> int:
    """How many connections this process can hold with RESERVED_FDS left over,
    raising the soft open-files limit towards the hard one if `wanted` needs it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(0, soft - RESERVED_FDS)


def descriptor_cap(max_connections: int) -> int:
    """How many connections a process holds at most, streams or not: the streams of
    limits.max_connections plus headroom for requests being read and answers being
    written (a sixteenth, at least 64), within what the open-files limit leaves after
    RESERVED_FDS. Past it a connection is turned away at once (503)."""
    wanted = max_connections + max(64, max_connections // 16)
    return min(wanted, connection_budget(wanted))


def check_open_files(max_connections: int, processes: int = 1) -> None:
    """Refuse to start when the open-files limit cannot hold the configured cap."""
    share = -(-max_connections // processes)
    budget = connection_budget(share)
    if budget < share:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        per = f" per worker ({processes} workers)" if processes > 1 else ""
        raise StartupError(
            f"limits.max_connections = {max_connections} needs {share + RESERVED_FDS} open "
            f"files{per}, but the limit is {soft}: raise it (LimitNOFILE= in the systemd "
            f"unit, ulimit -n) or lower limits.max_connections"
        )


class StopSignals:
    """SIGTERM or SIGINT start the drain; a second one forces it (as uvicorn's
    handle_exit); SIGHUP reloads."""

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


class Daemon:
    def __init__(
        self, config: Config, config_path: str | None = None, log_level: str | None = None
    ) -> None:
        self.config = config
        # SIGHUP re-reads this file; `log_level` is a --log-level that outranks it.
        self._config_path = config_path
        self._log_level = log_level
        self.loop = asyncio.get_running_loop()
        self.started = time.time()
        self.signals = StopSignals()
        self.servers: list[asyncio.Server] = []
        self.sockets: list[socket.socket] = []  # held open: reserved ports, inherited listeners
        self.unix_paths: list[str] = []
        self.listeners: list[str] = []
        self._reloaders: list[Callable[[Config], None]] = []

    # -- listeners --------------------------------------------------------------

    async def listen_tcp(
        self, address: str, factory: Callable[[], asyncio.Protocol], *, reuse_port: bool = False
    ) -> None:
        host, port = parse_tcp(address)
        try:
            server = await self.loop.create_server(
                factory, host, port, reuse_address=True, reuse_port=reuse_port, backlog=4096
            )
        except OSError as exc:
            raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None
        self.servers.append(server)
        for sock in server.sockets:
            self.listeners.append(_url(sock))

    async def listen_unix(
        self, path: str, mode: int, factory: Callable[[], asyncio.Protocol]
    ) -> None:
        prepare_unix_path(path)
        try:
            with _umask(0o177):
                server = await self.loop.create_unix_server(factory, path, backlog=4096)
            os.chmod(path, mode)
        except OSError as exc:
            raise StartupError(f"cannot listen on {path}: {exc.strerror}") from None
        self.servers.append(server)
        self.unix_paths.append(path)
        self.listeners.append(f"unix:{path}")

    async def serve_socket(
        self, sock: socket.socket, factory: Callable[[], asyncio.Protocol]
    ) -> None:
        """Accept on a socket bound elsewhere (a worker's inherited Unix listener)."""
        self.servers.append(await self.loop.create_unix_server(factory, sock=sock, backlog=4096))

    def reserve_tcp(self, address: str) -> str:
        """Bind without listening: holds the port (and resolves port 0) for workers'
        SO_REUSEPORT sockets without taking any connection itself."""
        host, port = parse_tcp(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None
        self.sockets.append(sock)
        url = _url(sock)
        self.listeners.append(url)
        return url.removeprefix("http://")

    def bind_unix(self, path: str, mode: int) -> socket.socket:
        """A listening Unix socket that child processes inherit."""
        prepare_unix_path(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _umask(0o177):
                sock.bind(path)
            os.chmod(path, mode)
            sock.listen(4096)
        except OSError as exc:
            sock.close()
            raise StartupError(f"cannot listen on {path}: {exc.strerror}") from None
        sock.set_inheritable(True)
        self.sockets.append(sock)
        self.unix_paths.append(path)
        self.listeners.append(f"unix:{path}")
        return sock

    def stop_accepting(self) -> None:
        for server in self.servers:
            server.close()

    def cleanup(self) -> None:
        self.stop_accepting()
        for sock in self.sockets:
            sock.close()
        for path in self.unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # -- reload -----------------------------------------------------------------

    def on_reload(self, apply: Callable[[Config], None]) -> None:
        """`apply` gets the settings to run with after every SIGHUP that read a file."""
        self._reloaders.append(apply)

    def reload(self) -> None:
        new = reread_config(self._config_path, self.signals.stop.is_set())
        if new is not None:
            self.apply(new)
            systemd.ready("reloaded")

    def apply(self, new: Config) -> None:
        plan = plan_reload(self.config, new)
        self.config = plan.config
        for apply in self._reloaders:
            apply(plan.config)
        if self._log_level is None:
            logs.set_level(plan.config.log.level)
        for key in plan.restart:
            log.warning("reload: %s changed but needs a restart; keeping the running value", key)
        log.info(
            "reloaded %s: %s",
            self._config_path or "settings from the supervisor",
            ", ".join(plan.applied) if plan.applied else "no live setting changed",
        )

    def info(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "listeners": self.listeners,
        }


class App(Protocol):
    daemon: Daemon

    async def start(self) -> None: ...
    async def drain(self) -> None: ...
    def describe(self) -> str: ...


async def run(app: App, ready: Callable[[Any], None] | None = None) -> None:
    """The life of a serving process: start, serve until a signal, drain."""
    daemon = app.daemon
    try:
        await app.start()
    except BaseException:
        await app.drain()
        raise
    daemon.signals.install(daemon.loop, daemon.reload)
    log.info("fanout %s ready: %s; control on unix:%s", __version__, app.describe(),
             daemon.config.control.socket)  # fmt: skip
    if ready is not None:
        ready(app)
    systemd.ready(app.describe())
    await daemon.signals.stop.wait()
    systemd.stopping()
    await app.drain()
    log.info("stopped")


def _url(sock: socket.socket) -> str:
    name = sock.getsockname()
    shown = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
    return f"http://{shown}:{name[1]}"
