"""The servers under test, started fresh for each scenario: fanout and nginx + nchan.

Both expose the same things to the benchmark: the subscriber URL, a way to
publish, and the pids whose CPU time and memory are measured from /proc.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
MAX_OPEN_FILES = 20_000


class ServerError(RuntimeError):
    pass


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, from /proc/PID/stat (clock ticks)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with (
            contextlib.suppress(FileNotFoundError, ProcessLookupError),
            open(f"/proc/{pid}/status") as f,
        ):
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def softnet_drops() -> int:
    """Packets the kernel dropped from its per-CPU input backlogs (loopback included)."""
    try:
        with open("/proc/net/softnet_stat") as f:
            return sum(int(line.split()[1], 16) for line in f)
    except (OSError, IndexError, ValueError):
        return 0


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (a multi-worker daemon, nginx's master and workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ServerError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_get_unix(path: str, target: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target.encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class Server:
    name = ""
    host = "127.0.0.1"
    port = 0
    subscribe_path = ""
    publish_kind = ""
    publish_address = ""
    proc: subprocess.Popen[bytes] | None = None

    def pids(self) -> list[int]:
        raise NotImplementedError

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log_tail(self) -> str:
        return ""


class Fanout(Server):
    name = "fanout"
    publish_kind = "fanout"

    def __init__(
        self,
        workdir: Path,
        topic: str,
        flush_interval_ms: float = 0.0,
        src: str | None = None,
        workers: int = 1,
    ) -> None:
        self.workers = workers
        self.workdir = workdir
        self.src = src  # a directory holding the `fanout` package to run instead
        self.control = str(workdir / "c.sock")
        self.subscribe_path = f"/events?topic={topic}"
        self.publish_address = self.control
        self.flush_interval_ms = flush_interval_ms
        self.log_path = workdir / "fanout.log"
        self.pid = 0

    def config(self) -> str:
        return f"""\
workers = {self.workers}

[[listener]]
tcp = "127.0.0.1:0"

[control]
socket = "{self.control}"
max_body_bytes = 16777216

[limits]
# Each process stays under the 20,000 open-files cap; with workers the cap is global.
max_connections = {19900 * self.workers}
max_connections_per_user = 19900
header_timeout_s = 60.0

[stream]
heartbeat_interval_s = 3600.0
flush_interval_ms = {self.flush_interval_ms}
shutdown_timeout_s = 5.0
shutdown_retry_spread_ms = 0

[log]
level = "warning"
"""

    def start(self) -> Fanout:
        path = self.workdir / "fanout.toml"
        path.write_text(self.config())
        env = dict(os.environ)
        if self.src:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.src, env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fanout", "serve", "-c", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
            )
        stats = _wait(self._stats_or_none, 60, "fanout to answer /stats")
        self.pid = int(stats["pid"])
        tcp = [u for u in stats["listeners"] if u.startswith("http://")]
        self.port = int(tcp[0].rsplit(":", 1)[1])
        return self

    def _stats_or_none(self) -> dict[str, object] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ServerError(f"fanout exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            return self.stats()
        except (OSError, ValueError):
            return None

    def stats(self) -> dict[str, object]:
        raw = _http_get_unix(self.control, "/stats")
        head, _, body = raw.partition(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise ValueError(head[:100])
        return json.loads(body)  # type: ignore[no-any-return]

    def pids(self) -> list[int]:
        # The serving process (or, with [workers] > 1, the supervisor and its workers).
        assert self.proc is not None
        return process_tree(self.proc.pid)

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-2000:]


class Nchan(Server):
    """nginx with one worker process (per-core comparison) and nchan on loopback."""

    name = "nchan"
    publish_kind = "nchan"

    def __init__(self, workdir: Path, topic: str) -> None:
        self.workdir = workdir
        self.subscribe_path = f"/sub?topic={topic}"

    @staticmethod
    def available() -> bool:
        return shutil.which("nginx") is not None and NCHAN_MODULE.exists()

    def config(self) -> str:
        d = self.workdir
        return f"""\
load_module {NCHAN_MODULE};
worker_processes 1;
worker_rlimit_nofile {MAX_OPEN_FILES};
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    # nchan takes connection slots beyond its sockets (at 19,000 subscribers 19,900
    # were "not enough"); the slots are cheap, the open-files cap still holds.
    worker_connections {2 * MAX_OPEN_FILES};
    multi_accept on;
}}
http {{
    access_log off;
    # nginx closes a keep-alive connection after 1,000 requests by default; the
    # publish-bound scenarios send 2,500 per connection, as long-lived app workers do.
    keepalive_requests 1000000;
    client_body_temp_path {d}/tmp_body;
    proxy_temp_path {d}/tmp_proxy;
    fastcgi_temp_path {d}/tmp_fastcgi;
    uwsgi_temp_path {d}/tmp_uwsgi;
    scgi_temp_path {d}/tmp_scgi;
    nchan_max_reserved_memory 256m;
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        location = /sub {{
            nchan_subscriber eventsource;
            nchan_channel_id $arg_topic;
        }}
        location = /pub {{
            nchan_publisher;
            nchan_channel_id $arg_topic;
            nchan_message_buffer_length 1000;
            nchan_message_timeout 5m;
        }}
    }}
}}
"""

    def start(self) -> Nchan:
        if not self.available():
            raise ServerError("nginx or libnginx-mod-nchan is not installed")
        self.port = _free_port()
        self.publish_address = f"127.0.0.1:{self.port}"
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config())
        self.log_path = self.workdir / "nginx.out"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["nginx", "-p", str(self.workdir), "-c", str(conf), "-g", "daemon off;"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait(self._workers_ready, 20, "nginx to listen")
        return self

    def _children(self) -> list[int]:
        assert self.proc is not None
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []

    def _workers_ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ServerError(f"nginx exited with {self.proc.returncode}: {self.log_tail()}")
        if not self._children():
            return False
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def pids(self) -> list[int]:
        # The master only starts and reaps; its CPU is counted too, for fairness.
        assert self.proc is not None
        return process_tree(self.proc.pid)

    def log_tail(self) -> str:
        out = []
        for name in ("nginx.out", "error.log"):
            path = self.workdir / name
            if path.exists():
                out.append(path.read_text(errors="replace")[-1500:])
        return "\n".join(out)
