"""With `workers = N`: the supervisor process and its workers.

The supervisor owns the control socket and a hub with no subscribers of its own: it
validates, assigns ids, encodes each event once and retains it, then sends the same
frame to every worker. Workers accept subscribers on the shared listeners (each TCP
listener is bound by every worker with SO_REUSEPORT, so the kernel spreads
connections evenly; a Unix listener is one socket they inherit). A worker asks the
supervisor before admitting a connection, so the caps hold across workers. A worker
that dies is restarted and seeded with everything retained, so its clients resume
on any worker without loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

from . import __version__, link, logs, systemd
from .config import Config, parse_tcp, worker_count
from .control import ControlApi, ControlProtocol
from .hub import Delivery, Hub, Route
from .ids import format_id, new_epoch
from .registry import Registry
from .reload import plan as plan_reload
from .server import (
    EXPIRE_EVERY_S,
    StartupError,
    StopSignals,
    _umask,
    prepare_unix_path,
    reread_config,
)
from .sse import Frame

log = logging.getLogger("fanout.supervisor")

READY_DEADLINE_S = 30.0
STATS_DEADLINE_S = 2.0
RESTART_BACKOFF_S = (0.2, 10.0)
# A worker that lived this long restarts without delay after a crash.
STABLE_AFTER_S = 30.0


class MasterLink(asyncio.Protocol):
    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self._supervisor = supervisor
        self._index = index
        self._decoder = link.Decoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        # Hello and the seed go first, in this very callback: events forwarded
        # before it were dropped (no transport yet) and are in the seed; events
        # after it follow it on the same stream. Nothing falls between or doubles.
        self._supervisor.greet(self._index, self)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except link.LinkError as exc:
            log.error("worker %d sent garbage (%s): restarting it", self._index, exc)
            if self.transport is not None:
                self.transport.abort()
            return
        for message in messages:
            self._supervisor.on_message(self._index, message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._supervisor.on_worker_lost(self._index, self)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes]
    link: MasterLink
    started: float
    ready: bool = False
    pid: int = 0
    exited: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Supervisor:
    def __init__(self, config: Config, config_path: str | None, log_level: str | None) -> None:
        self.config = config
        self._config_path = config_path
        self._log_level = log_level
        self._loop = asyncio.get_running_loop()
        self._started = time.time()
        self.count = worker_count(config)
        self.hub = Hub(
            epoch=new_epoch(),
            limits=config.limits,
            stream=config.stream,
            replay=config.replay,
            clock=self._loop.time,
            schedule_flush=self._loop.call_soon,
        )
        self.hub.on_event = self._forward
        self.registry = Registry(config.limits)
        self.workers: dict[int, Worker] = {}
        self.restarts = 0
        self._backoff: dict[int, float] = {}
        self._stopping = False
        self._signals = StopSignals()
        self._stop, self._force = self._signals.stop, self._signals.force
        self._all_ready = asyncio.Event()
        self._tcp: list[str | None] = []
        self._unix_fds: list[int | None] = []
        self._keep: list[socket.socket] = []  # reserved ports and shared Unix listeners
        self._unix_paths: list[str] = []
        self.listeners: list[str] = []
        self._control: asyncio.Server | None = None
        self._stats_replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._stats_n = 0
        self._expire_handle: asyncio.TimerHandle | None = None

    # -- listeners ------------------------------------------------------------

    def _bind_listeners(self) -> None:
        for listener in self.config.listener:
            if listener.tcp:
                self._tcp.append(self._reserve_tcp(listener.tcp))
                self._unix_fds.append(None)
            else:
                self._tcp.append(None)
                self._unix_fds.append(self._bind_unix(listener.unix, listener.unix_mode))

    def _reserve_tcp(self, address: str) -> str:
        # Bound but never listening: it holds the port (and resolves port 0) for the
        # workers' SO_REUSEPORT sockets without taking any connection itself.
        host, port = parse_tcp(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None
        self._keep.append(sock)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.listeners.append(f"http://{shown}:{bound}")
        return f"{shown}:{bound}"

    def _bind_unix(self, path: str, mode: int) -> int:
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
        self._keep.append(sock)
        self._unix_paths.append(path)
        self.listeners.append(f"unix:{path}")
        return sock.fileno()

    async def start(self) -> None:
        self._bind_listeners()
        for index in range(1, self.count + 1):
            self._spawn(index)
        try:
            await asyncio.wait_for(self._all_ready.wait(), READY_DEADLINE_S)
        except TimeoutError:
            raise StartupError("workers did not start in time; see their log lines") from None
        # Last: a control socket that answers means every worker accepts connections.
        api = ControlApi(self, self.snapshot)
        factory = functools.partial(ControlProtocol, api, self.config.control.max_body_bytes)
        path = self.config.control.socket
        prepare_unix_path(path)
        try:
            with _umask(0o177):
                self._control = await self._loop.create_unix_server(factory, path, backlog=4096)
            os.chmod(path, self.config.control.socket_mode)
        except OSError as exc:
            raise StartupError(f"cannot listen on {path}: {exc.strerror}") from None
        self._unix_paths.append(path)
        self.listeners.append(f"unix:{path}")
        self._expire()

    # -- workers --------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [theirs.fileno(), *(fd for fd in self._unix_fds if fd is not None)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "_worker", "--link-fd", str(theirs.fileno())],
            pass_fds=fds,
        )
        theirs.close()
        master_link = MasterLink(self, index)
        worker = Worker(index, proc, master_link, self._loop.time())
        self.workers[index] = worker
        self._loop.create_task(self._connect(worker, ours))
        # A thread per worker waits for its exit: the default executor's few
        # threads must not be held by processes that live for months.
        threading.Thread(target=self._reap, args=(worker,), daemon=True).start()

    async def _connect(self, worker: Worker, sock: socket.socket) -> None:
        await self._loop.create_unix_connection(lambda: worker.link, sock=sock)

    def greet(self, index: int, master_link: MasterLink) -> None:
        hello = link.Hello(index, self.hub.epoch, self.config, self._tcp, self._unix_fds)
        master_link.send(link.encode(hello))
        master_link.send(link.encode(link.Seed(self.hub.export_state())))

    def _reap(self, worker: Worker) -> None:
        code = worker.proc.wait()
        self._loop.call_soon_threadsafe(self._exited, worker, code)

    @staticmethod
    def _exited(worker: Worker, code: int) -> None:
        if not worker.exited.done():
            worker.exited.set_result(code)

    def on_worker_lost(self, index: int, lost_link: MasterLink) -> None:
        worker = self.workers.get(index)
        if worker is None or worker.link is not lost_link:
            return
        worker.ready = False
        dropped = self.registry.remove_worker(index)
        if self._stopping:
            return  # drain() waits for the workers, and kills them at its deadline
        if worker.proc.poll() is None:
            # Link lost but the process lives (it broke the protocol, or hangs):
            # it must not linger beside its replacement.
            worker.proc.kill()
        lived = self._loop.time() - worker.started
        delay = 0.0 if lived > STABLE_AFTER_S else self._backoff.get(index, RESTART_BACKOFF_S[0])
        self._backoff[index] = min(max(delay * 2, RESTART_BACKOFF_S[0]), RESTART_BACKOFF_S[1])
        log.error(
            "worker %d (pid %d) died; %d clients will resume elsewhere; restarting in %.1f s",
            index,
            worker.pid or worker.proc.pid,
            dropped,
            delay,
        )
        self.restarts += 1
        self._loop.call_later(delay, self._respawn, index)

    def _respawn(self, index: int) -> None:
        if not self._stopping:
            self._spawn(index)

    def on_message(self, index: int, message: link.Message) -> None:
        worker = self.workers[index]
        if isinstance(message, link.Admit):
            self._admit(worker, message)
        elif isinstance(message, link.Closed):
            self.registry.remove(message.conn)
        elif isinstance(message, link.StatsReply):
            future = self._stats_replies.pop(message.n, None)
            if future is not None and not future.done():
                future.set_result(message.data)
        elif isinstance(message, link.Ready):
            worker.ready = True
            worker.pid = message.pid
            if all(w.ready for w in self.workers.values()) and len(self.workers) == self.count:
                self._all_ready.set()

    def _admit(self, worker: Worker, message: link.Admit) -> None:
        decision = self.registry.admit(
            worker.index, message.conn, message.user, frozenset(message.topics)
        )
        refusal = decision.refusal
        if refusal is not None:
            verdict = link.Verdict(
                message.conn, refusal.status, refusal.reason, list(refusal.headers)
            )
        else:
            verdict = link.Verdict(message.conn, 0)
        worker.link.send(link.encode(verdict))
        for old in decision.evict:
            holder = self.workers.get(old.worker)
            if holder is not None:
                reason = "evicted: this user opened a newer connection"
                holder.link.send(link.encode(link.Evict(old.id, reason)))

    # -- publishing (the control API's backend) ---------------------------------

    @property
    def draining(self) -> bool:
        return self._stopping

    def _forward(self, route: Route, seq: int, frame: Frame) -> None:
        message = link.encode(
            link.Event(seq, route.kind, route.key, route.topic, frame.raw, frame.chunked)
        )
        # Every worker gets every event: it retains it, so a client can resume on
        # any worker; and even an event for one connection elsewhere moves its head,
        # so an id from it is not taken for one from the future.
        for worker in self.workers.values():
            worker.link.send(message)

    def publish(self, topic: str, event: str, payload: bytes, user: str | None = None) -> Delivery:
        d = self.hub.publish(topic, event, payload, user)
        sent = self.registry.on_topic(topic, user)
        return Delivery(d.id, sent, sent)

    def publish_many(self, items: list[tuple[str, str, bytes, str | None]]) -> list[Delivery]:
        """(topic, event, payload, user) each; validated before, so all go out."""
        return [self.publish(topic, event, payload, user) for topic, event, payload, user in items]

    def broadcast(self, event: str, payload: bytes) -> Delivery:
        d = self.hub.broadcast(event, payload)
        return Delivery(d.id, len(self.registry), len(self.registry))

    def notify(self, user: str, event: str, payload: bytes) -> Delivery:
        d = self.hub.notify(user, event, payload)
        n = self.registry.of_user(user)
        return Delivery(d.id, n, n)

    def send(self, connection_id: str, event: str, payload: bytes) -> Delivery | None:
        if self.registry.get(connection_id) is None:
            return None
        seq, frame = self.hub.encode(event, payload)
        self._forward(Route("conn", connection_id), seq, frame)
        return Delivery(format_id(self.hub.epoch, seq), 1, 1)

    # -- stats ----------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        replies = []
        asked = []
        for worker in self.workers.values():
            if worker.ready:
                self._stats_n += 1
                asked.append(self._stats_n)
                future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
                self._stats_replies[self._stats_n] = future
                worker.link.send(link.encode(link.StatsQuery(self._stats_n)))
                replies.append(future)
        done, pending = (
            await asyncio.wait(replies, timeout=STATS_DEADLINE_S) if replies else ((), ())
        )
        for future in pending:
            future.cancel()
        for n in asked:  # a worker that died mid-query never answers
            self._stats_replies.pop(n, None)
        per_worker = [f.result() for f in done]
        out: dict[str, Any] = {
            "version": __version__,
            "pid": os.getpid(),
            "epoch": self.hub.epoch,
            "uptime_s": round(time.time() - self._started, 3),
            "listeners": self.listeners,
            **self.hub.counts(),
            **self.hub.stats.as_dict(),
        }
        # Counted where they happen: events encoded here, deliveries in workers.
        for key in ("delivered", "dropped_slow", "evicted", "heartbeats", "timeouts",
                    "replays", "replayed_events", "resets"):  # fmt: skip
            out[key] = sum(w[key] for w in per_worker)
        refused: dict[str, int] = {}
        for w in per_worker:
            for status, count in w["refused"].items():
                refused[status] = refused.get(status, 0) + count
        out["refused"] = dict(sorted(refused.items()))
        out["refused_total"] = sum(refused.values())
        out.update(self.registry.counts())
        out["workers"] = [
            {"index": w["index"], "pid": w["pid"], "connections": w["connections"]}
            for w in sorted(per_worker, key=lambda w: w["index"])
        ]
        out["worker_restarts"] = self.restarts
        return out

    def _expire(self) -> None:
        self.hub.expire()
        self._expire_handle = self._loop.call_later(EXPIRE_EVERY_S, self._expire)

    # -- signals and stop -------------------------------------------------------

    def install_signal_handlers(self) -> None:
        self._signals.install(self._loop, self.reload)

    def reload(self) -> None:
        new = reread_config(self._config_path, self._stopping)
        if new is None:
            return
        plan = plan_reload(self.config, new)
        self.config = plan.config
        self.registry.limits = plan.config.limits
        self.hub.update_limits(plan.config.limits)
        if self._log_level is None:
            logs.set_level(plan.config.log.level)
        for worker in self.workers.values():
            worker.link.send(link.encode(link.Reload(plan.config)))
        for key in plan.restart:
            log.warning("reload: %s changed but needs a restart; keeping the running value", key)
        log.info(
            "reloaded %s: %s",
            self._config_path,
            ", ".join(plan.applied) or "no live setting changed",
        )
        systemd.ready("reloaded")

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def drain(self) -> None:
        self._stopping = True
        self.registry.draining = True
        if self._control is not None:
            self._control.close()
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        # Each worker drains its own streams within shutdown_timeout_s.
        deadline = self.config.stream.shutdown_timeout_s + 5
        exits = [w.exited for w in self.workers.values()]
        if exits:
            force = asyncio.ensure_future(self._force.wait())
            everyone = asyncio.ensure_future(asyncio.wait(exits))
            await asyncio.wait(
                {force, everyone}, timeout=deadline, return_when=asyncio.FIRST_COMPLETED
            )
            force.cancel()
            for worker in self.workers.values():
                if worker.proc.poll() is None:
                    log.warning("worker %d did not stop in time: killing it", worker.index)
                    worker.proc.kill()
            await asyncio.wait(exits, timeout=5)
            everyone.cancel()
        if self._expire_handle is not None:
            self._expire_handle.cancel()
        for sock in self._keep:
            sock.close()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


async def serve(config: Config, *, config_path: str | None, log_level: str | None) -> None:
    supervisor = Supervisor(config, config_path, log_level)
    try:
        await supervisor.start()
    except BaseException:
        await supervisor.drain()
        raise
    supervisor.install_signal_handlers()
    log.info(
        "fanout %s ready: %d workers, subscribers on %s; control on unix:%s",
        __version__,
        supervisor.count,
        ", ".join(supervisor.listeners[:-1]),
        config.control.socket,
    )
    systemd.ready(f"{supervisor.count} workers serving")
    await supervisor.wait_stopped()
    systemd.stopping()
    await supervisor.drain()
    log.info("stopped")
