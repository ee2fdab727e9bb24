"""With `workers = N`: the supervisor process and its workers.

The supervisor owns the control socket, the id space and retention, but no
subscriber: it validates, assigns ids, encodes each event once and retains it, then
sends the same frame to every worker. Workers accept subscribers on the shared
listeners (each TCP listener is bound by every worker with SO_REUSEPORT, so the
kernel spreads connections evenly; a Unix listener is one socket they inherit). A
worker asks the supervisor before admitting a connection, so the caps hold across
workers. A worker that dies is restarted and seeded with everything retained, so its
clients resume on any worker without loss.

On the backplane the supervisor is the daemon's one reader of the shared stream and
feeds its workers from it; per-user limits are counted in Redis across daemons.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, cast

from . import link
from .admission import EVICTED, decide
from .config import Config, worker_count
from .control import ControlApi, ControlProtocol
from .daemon import Daemon, StartupError, check_open_files
from .ids import Sequencer, new_epoch
from .opening import covers
from .publishing import Emit, Events, Publishing
from .registry import Registry
from .retention import Retention
from .route import Delivery, Route, keys_of
from .sse import Frame
from .stats import COUNTERS, Stats, add_up
from .streams import EXPIRE_EVERY_S

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
        self.daemon = daemon = Daemon(config, config_path, log_level)
        self._loop = daemon.loop
        self.count = worker_count(config)
        self.stats = Stats()  # what happens here (events published); workers count the rest
        self.ids = Sequencer(new_epoch())
        self.retention = Retention(config.replay)
        self.registry = Registry(config.limits)
        self.workers: dict[int, Worker] = {}
        self.restarts = 0
        self._backoff: dict[int, float] = {}
        self._stopping = False
        self._all_ready = asyncio.Event()
        self._tcp: list[str | None] = []
        self._unix_fds: list[int | None] = []
        self._stats_replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._stats_n = 0
        self._expire_handle: asyncio.TimerHandle | None = None
        self._admitting: set[asyncio.Task[None]] = set()
        self.backplane: Any = None
        emit: Emit = self._publish_here
        if config.backplane.redis:
            from .backplane import Backplane
            from .on_backplane import stream_emit

            # This supervisor is the Sink its stream is read into.
            self.backplane = Backplane(config.backplane, lambda: self.daemon.config.limits, self)
            emit = stream_emit(self.backplane, self.registry.count_for, lambda: len(self.registry))
        self.publishing = Publishing(emit, self._holds, lambda: self._stopping)
        daemon.on_reload(self._apply)

    # -- start ------------------------------------------------------------------

    async def start(self) -> None:
        if self.backplane is not None:
            from . import on_backplane

            await on_backplane.start(self.backplane)
        # Each worker holds its share; they inherit the limit raised here.
        check_open_files(self.daemon.config.limits.max_connections, self.count)
        for listener in self.daemon.config.listener:
            if listener.tcp:
                self._tcp.append(self.daemon.reserve_tcp(listener.tcp))
                self._unix_fds.append(None)
            else:
                self._tcp.append(None)
                sock = self.daemon.bind_unix(listener.unix, listener.unix_mode)
                self._unix_fds.append(sock.fileno())
        for index in range(1, self.count + 1):
            self._spawn(index)
        try:
            await asyncio.wait_for(self._all_ready.wait(), READY_DEADLINE_S)
        except TimeoutError:
            raise StartupError("workers did not start in time; see their log lines") from None
        # Last: a control socket that answers means every worker accepts connections.
        control = self.daemon.config.control
        api = ControlApi(self.publishing, self.snapshot)
        await self.daemon.listen_unix(
            control.socket,
            control.socket_mode,
            lambda: ControlProtocol(api, control.max_body_bytes),
        )
        self._expire()

    def describe(self) -> str:
        return f"{self.count} workers serving on " + ", ".join(self.daemon.listeners[:-1])

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
        config = self.daemon.config
        hello = link.Hello(index, self.ids.epoch, config, self._tcp, self._unix_fds)
        master_link.send(link.encode(hello))
        state = self.retention.export(self.ids.head, self._loop.time())
        master_link.send(link.encode(link.Seed(state)))

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
        if self.backplane is not None:
            for conn in dropped:
                self.backplane.release(conn)
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
            len(dropped),
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
            if self.backplane is None:
                self._admit(worker, message)
            else:
                task = asyncio.ensure_future(self._admit_on_backplane(worker, message))
                self._admitting.add(task)
                task.add_done_callback(self._admitting.discard)
        elif isinstance(message, link.Closed):
            self.registry.remove(message.conn)
            if self.backplane is not None:
                self.backplane.release(message.conn)
        elif isinstance(message, link.StatsReply):
            future = self._stats_replies.pop(message.n, None)
            if future is not None and not future.done():
                future.set_result(message.data)
        elif isinstance(message, link.Ready):
            worker.ready = True
            worker.pid = message.pid
            if all(w.ready for w in self.workers.values()) and len(self.workers) == self.count:
                self._all_ready.set()

    # -- admission --------------------------------------------------------------

    def _admit(self, worker: Worker, message: link.Admit) -> None:
        topics = frozenset(message.topics)
        decision = self.registry.admit(worker.index, message.conn, message.user, topics)
        refusal = decision.refusal
        if refusal is not None:
            verdict = link.Verdict(
                message.conn, refusal.status, refusal.reason, list(refusal.headers)
            )
            worker.link.send(link.encode(verdict))
            return
        for old in decision.evict:
            holder = self.workers.get(old.worker)
            if holder is not None:
                holder.link.send(link.encode(link.Evict(old.id, EVICTED)))
        worker.link.send(link.encode(link.Verdict(message.conn, 0)))

    async def _admit_on_backplane(self, worker: Worker, message: link.Admit) -> None:
        from .backplane import Unavailable

        bp = self.backplane
        topics = frozenset(message.topics)
        # The cap counts this daemon's connections, those being admitted (each awaits
        # Redis) included, or a burst of them would all pass it; this one is among them.
        total = len(self.registry) + len(self._admitting) - 1
        refusal = decide(self.registry.limits, self._stopping, total, []).refusal
        if refusal is None and message.user is not None:
            try:
                refusal = (await bp.admit(message.conn, message.user)).refusal
            except Unavailable:
                log.warning("backplane down: per-user limit counted on this daemon only")
                local = self.registry.decide(message.user)
                refusal = local.refusal
                if refusal is None:
                    for old in local.evict:
                        self.evict(old.id, EVICTED)
        backfill: list[tuple[int, bytes, bytes]] = []
        last = message.last_event_id
        if refusal is None and last is not None:
            keys = keys_of(topics, message.user)
            found = await bp.resume(
                topics, message.user, last, lambda: covers(self.ids, self.retention, keys, last)
            )
            backfill = [(seq, f.raw, f.chunked) for seq, f in found or ()]
        if refusal is not None:
            verdict = link.Verdict(
                message.conn, refusal.status, refusal.reason, list(refusal.headers)
            )
        else:
            self.registry.add(worker.index, message.conn, message.user, topics)
            verdict = link.Verdict(message.conn, 0, backfill=backfill)
        if worker.link.transport is None:
            self.registry.remove(message.conn)  # the worker went while we waited
            return
        worker.link.send(link.encode(verdict))

    def _holds(self, connection_id: str) -> bool | None:
        if self.registry.get(connection_id) is not None:
            return True
        return None if self.backplane is not None else False

    # -- the backplane's Sink, and the events published here ------------------------

    def ingest(self, route: Route, seq: int, frame: Frame, live: bool) -> None:
        self.ids.observe(seq)
        self.retention.retain(route, seq, frame, self._loop.time())
        if live:
            self.stats.published += 1
            self._forward(route, seq, frame)

    def new_epoch(self, epoch: str) -> None:
        self.ids.restart(epoch)
        self.retention.clear()
        self._broadcast(link.encode(link.NewEpoch(epoch)))

    def gap(self, upto: int) -> None:
        self.retention.mark_gap(upto)
        self.ids.observe(upto)
        self._broadcast(link.encode(link.Gap(upto)))

    def evict(self, connection_id: str, reason: str) -> bool:
        conn = self.registry.remove(connection_id)
        holder = self.workers.get(conn.worker) if conn is not None else None
        if holder is None:
            return False
        holder.link.send(link.encode(link.Evict(connection_id, reason)))
        return True

    def _publish_here(self, events: Events) -> list[Delivery]:
        out = []
        for route, event, payload in events:
            seq = self.ids.next()
            self.ingest(route, seq, self.ids.frame(seq, event, payload), True)
            n = self.registry.count_for(route)
            out.append(Delivery(self.ids.id(seq), n, len(self.registry)))
        return out

    def _forward(self, route: Route, seq: int, frame: Frame) -> None:
        # Every worker gets every event: it retains it, so a client can resume on
        # any worker; and even an event for one connection elsewhere moves its head,
        # so an id from it is not taken for one from the future.
        self._broadcast(
            link.encode(
                link.Event(seq, route.kind, route.key, route.topic, frame.raw, frame.chunked)
            )
        )

    def _broadcast(self, message: bytes) -> None:
        for worker in self.workers.values():
            worker.link.send(message)

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
        return {
            **self.daemon.info(),
            "epoch": self.ids.epoch,
            **self.retention.counts(),
            "last_id": self.ids.id(self.ids.head),
            # Each counter is counted where it happens; the sum is the daemon's.
            **add_up([self.stats.as_dict(), *per_worker], COUNTERS),
            **self.registry.counts(),
            "workers": [
                {"index": w["index"], "pid": w["pid"], "connections": w["connections"]}
                for w in sorted(per_worker, key=lambda w: w["index"])
            ],
            "worker_restarts": self.restarts,
        }

    def _expire(self) -> None:
        self.retention.expire(self._loop.time())
        self._expire_handle = self._loop.call_later(EXPIRE_EVERY_S, self._expire)

    # -- reload and stop ----------------------------------------------------------

    def _apply(self, config: Config) -> None:
        self.registry.limits = config.limits
        for worker in self.workers.values():
            worker.link.send(link.encode(link.Reload(config)))

    async def drain(self) -> None:
        self._stopping = True
        self.registry.draining = True
        self.daemon.stop_accepting()
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        # Each worker drains its own streams within shutdown_timeout_s.
        deadline = self.daemon.config.stream.shutdown_timeout_s + 5
        exits = [w.exited for w in self.workers.values()]
        if exits:
            force = asyncio.ensure_future(self.daemon.signals.force.wait())
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
        if self.backplane is not None:
            await self.backplane.stop()
        self.daemon.cleanup()
