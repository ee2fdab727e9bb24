"""Through a real nginx running the shipped deploy/nginx/fanout.conf.

The snippet is rendered into a temp dir by replacing the values its header names
(socket path, app address, listen port, read timeout), wrapped in a minimal
nginx.conf, and started in the foreground in front of the real daemon. The app that
checks credentials for `auth_request` is a real HTTP server in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import Daemon, merge, wait_for
from tests.sse_client import Response, SSEClient, request

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
SNIPPET = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "fanout.conf"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (tests/run.sh installs it)"),
]

TOKENS = {"tok-alice": "alice", "tok-bob": "bob", "tok-carol": "carol"}
# What the app grants each user, in X-Fanout-Grants (read when grants_header is set).
GRANTS = {"alice": "t, orders", "bob": "t"}
READ_TIMEOUT = "1s"  # nginx cuts an upstream silent for longer than this
HEARTBEAT_S = 0.2


# -- the app that authenticates ---------------------------------------------------


class AuthHandler(BaseHTTPRequestHandler):
    """The app's credential check: session cookie or bearer token -> X-Fanout-User."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path != "/auth/fanout":
            self._answer(404)
            return
        token = None
        cookie: SimpleCookie = SimpleCookie(self.headers.get("Cookie", ""))
        if "session" in cookie:
            token = cookie["session"].value
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            token = authorization.removeprefix("Bearer ")
        user = TOKENS.get(token or "")
        if user is None:
            self._answer(401)
        else:
            self._answer(204, ("X-Fanout-User", user), ("X-Fanout-Grants", GRANTS.get(user, "")))

    def _answer(self, status: int, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output for failures


@pytest.fixture
def auth_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), AuthHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


# -- nginx ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_snippet(fanout_socket: str, app: str, port: int) -> str:
    text = SNIPPET.read_text()
    replacements = {
        "unix:/run/fanout/public.sock;": f"unix:{fanout_socket};",
        "server 127.0.0.1:8000;": f"server {app};",
        "listen 80;": f"listen 127.0.0.1:{port};",
        "proxy_read_timeout 300s;": f"proxy_read_timeout {READ_TIMEOUT};",
    }
    for old, new in replacements.items():
        # If the shipped file drifts from what its header documents, say so here.
        assert old in text, f"{SNIPPET} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


WRAPPER = """\
{user}
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
# Old workers close their streams this long after a reload (see the snippet's header).
worker_shutdown_timeout 1s;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    # On for the whole site, as many have it: the stream's location must turn it off.
    gzip on;
    gzip_min_length 1;
    gzip_types text/event-stream text/plain;
    include {dir}/fanout.conf;
}}
"""


class Nginx:
    def __init__(self, directory: Path, fanout_socket: str, app: str) -> None:
        assert NGINX is not None
        self.dir = directory
        self.fanout_socket = fanout_socket
        self.app = app
        self.conf = directory / "nginx.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def _command(self) -> list[str]:
        assert NGINX is not None
        return [NGINX, "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "error.log")]

    def start(self) -> Nginx:
        (self.dir / "tmp").mkdir(exist_ok=True)
        # The port is picked free and then bound by nginx: retry if another
        # process took it in between.
        for _ in range(3):
            self.port = free_port()
            (self.dir / "fanout.conf").write_text(
                render_snippet(self.fanout_socket, self.app, self.port)
            )
            # As root, workers would run as nobody, who cannot enter the temp dir.
            user = "user root;" if os.geteuid() == 0 else ""
            self.conf.write_text(WRAPPER.format(dir=self.dir, user=user))
            self.proc = subprocess.Popen(self._command(), stderr=subprocess.DEVNULL)
            if wait_for(self._up_or_exited, 10, f"nginx to listen; log:\n{self.log}") == "up":
                return self
            if "Address already in use" not in self.log:
                break
        raise RuntimeError(f"nginx did not start:\n{self.log}")

    def _up_or_exited(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return "exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                return "up"
        return None

    def reload(self) -> None:
        subprocess.run(
            [*self._command(), "-s", "reload"], check=True, capture_output=True, timeout=10
        )

    @property
    def log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # fast shutdown: streams are cut
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Stack:
    daemon: Daemon
    nginx: Nginx

    async def get(
        self, target: str, token: str | None = "tok-alice", headers: dict[str, str] | None = None
    ) -> SSEClient | Response:
        # Connection: close, so a refusal's body ends with the connection.
        sent = {"Connection": "close"}
        if token is not None:
            sent["Cookie"] = f"session={token}"
        sent.update(headers or {})
        return await request("127.0.0.1", self.nginx.port, target, headers=sent)

    async def stream(self, target: str, **kw: Any) -> SSEClient:
        result = await self.get(target, **kw)
        assert isinstance(result, SSEClient), f"expected a stream, got {result}"
        return result

    async def refused(self, target: str, **kw: Any) -> Response:
        result = await self.get(target, **kw)
        assert isinstance(result, Response), "expected a refusal, got a stream"
        return result

    def reconfigure_daemon(self, changes: dict[str, Any]) -> None:
        daemon = self.daemon
        daemon.config = merge(daemon.config, changes)
        daemon.config_path.write_text(tomli_w.dumps(daemon.config))
        assert daemon.proc is not None
        before = daemon.log.count("reloaded")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.log.count("reloaded") > before, what="daemon reload")


@pytest.fixture
def behind_nginx(
    start_daemon: Callable[..., Daemon], short_tmp: Path, auth_app: str
) -> Iterator[Callable[..., Stack]]:
    started: list[Nginx] = []

    def start(config: dict[str, Any] | None = None) -> Stack:
        public = str(short_tmp / f"pub{len(started)}.sock")
        base = {
            "listener": [{"unix": public, "trusted": True}],
            "auth": {"mode": "header", "allow_anonymous": False},
            "stream": {"heartbeat_interval_s": HEARTBEAT_S},
        }
        daemon = start_daemon(merge(base, config or {}))
        directory = short_tmp / f"nginx{len(started)}"
        directory.mkdir()
        nginx = Nginx(directory, public, auth_app)
        started.append(nginx)
        return Stack(daemon, nginx.start())

    yield start
    for nginx in started:
        nginx.stop()


async def read_all_until(client: SSEClient, last: str, timeout: float = 10.0) -> list[Any]:
    """Event data (JSON) up to and including `last`."""
    out = []
    while True:
        event = await client.next(timeout)
        if event.event == "connected":
            continue
        out.append(event.json())
        if out[-1] == last:
            return out


# -- tests ------------------------------------------------------------------------


async def test_each_event_arrives_before_the_next_is_published(behind_nginx):
    stack = behind_nginx()
    client = await stack.stream("/events?topic=t", headers={"Accept-Encoding": "gzip"})
    assert client.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in client.headers  # gzip is off on the stream
    assert (await client.next()).event == "connected"
    for n in range(20):
        stack.daemon.publish("t", {"n": n})
        # Any buffer on the way (nginx's proxy buffer, gzip) would hold this back.
        assert (await client.next(timeout=2)).json() == {"n": n}
    client.close()


async def test_heartbeats_keep_an_idle_stream_open_past_the_read_timeout(behind_nginx):
    stack = behind_nginx()
    client = await stack.stream("/events?topic=t")
    assert (await client.next()).event == "connected"
    # 12 heartbeats of 0.2 s: idle more than twice nginx's 1 s read timeout.
    await client.wait_comment(12, timeout=10)
    stack.daemon.publish("t", "still open")
    assert (await client.next()).json() == "still open"
    client.close()

    # The control: with heartbeats rarer than the read timeout, nginx cuts the
    # stream, so the test above did depend on them.
    stack.reconfigure_daemon({"stream": {"heartbeat_interval_s": 30.0}})
    quiet = await stack.stream("/events?topic=t")
    with contextlib.suppress(asyncio.IncompleteReadError):
        await quiet.until_closed(timeout=10)
    assert quiet.ended
    assert quiet.comments == 0
    quiet.close()


async def test_last_event_id_resumes_through_the_proxy(behind_nginx):
    stack = behind_nginx()
    ids = [stack.daemon.publish("t", n)["id"] for n in range(5)]
    client = await stack.stream("/events?topic=t", headers={"Last-Event-ID": ids[1]})
    events = [e for e in await client.events(4) if e.event != "connected"]
    assert [e.json() for e in events] == [2, 3, 4]
    assert [e.id for e in events] == ids[2:]
    client.close()
    # The query-string form, for clients that cannot set headers.
    client = await stack.stream(f"/events?topic=t&lastEventId={ids[3]}")
    events = [e for e in await client.events(2) if e.event != "connected"]
    assert [e.json() for e in events] == [4]
    client.close()


async def test_auth_request_sets_the_user(behind_nginx):
    stack = behind_nginx({"limits": {"max_connections_per_user": 1}})
    assert (await stack.refused("/events?topic=t", token=None)).status == 401
    assert (await stack.refused("/events?topic=t", token="forged")).status == 401
    # A browser cannot name itself: the header alone, without a credential, is refused.
    spoof = {"X-Fanout-User": "bob"}
    assert (await stack.refused("/events?topic=t", token=None, headers=spoof)).status == 401

    alice = await stack.stream("/events?topic=t", headers={"X-Fanout-User": "mallory"})
    assert (await alice.next()).json()["user"] == "alice"
    bearer = await stack.stream(
        "/events?topic=t", token=None, headers={"Authorization": "Bearer tok-bob"}
    )
    assert (await bearer.next()).json()["user"] == "bob"

    # Alice's second stream counts as alice's, whatever header the browser adds.
    over = await stack.refused("/events?topic=t", headers={"X-Fanout-User": "carol"})
    assert over.status == 429
    assert over.headers["retry-after"] == "5"
    carol = await stack.stream("/events?topic=t", token="tok-carol")
    assert (await carol.next()).json()["user"] == "carol"
    # The daemon saw one refusal (the 401s are nginx's) and logged it once, with why.
    refusals = [line for line in stack.daemon.log.splitlines() if "refused" in line]
    assert len(refusals) == 1, refusals
    assert " INFO " in refusals[0]
    assert "429 too many connections for this user" in refusals[0]
    for client in (alice, bearer, carol):
        client.close()


async def test_auth_request_grants_the_topics(behind_nginx):
    # The production example's settings: nothing public but the user's own topics.
    stack = behind_nginx(
        {"auth": {"grants_header": "X-Fanout-Grants", "grants": ["user:{user}:*"]}}
    )
    alice = await stack.stream("/events?topic=t&topic=orders&topic=user:alice:inbox")
    assert (await alice.next()).json()["user"] == "alice"
    stack.daemon.publish("orders", "o-1")
    assert (await alice.next()).json() == "o-1"
    refused = await stack.refused("/events?topic=orders", token="tok-bob")
    assert refused.status == 403
    assert refused.body == b"not allowed to subscribe to: orders\n"
    # Grants the browser names itself are replaced by the app's (none, for carol).
    spoof = {"X-Fanout-Grants": "*"}
    spoofed = await stack.refused("/events?topic=t", token="tok-carol", headers=spoof)
    assert spoofed.status == 403
    carol = await stack.stream("/events?topic=user:carol:x", token="tok-carol", headers=spoof)
    assert (await carol.next()).json()["user"] == "carol"
    for client in (alice, carol):
        client.close()


async def test_server_full_reaches_the_client_as_503(behind_nginx):
    stack = behind_nginx({"limits": {"max_connections": 1}})
    first = await stack.stream("/events?topic=t")
    full = await stack.refused("/events?topic=t", token="tok-bob")
    assert full.status == 503
    assert full.headers["retry-after"] == "5"
    assert b"server full" in full.body
    first.close()


async def test_nginx_reload_while_events_flow_loses_nothing(behind_nginx):
    stack = behind_nginx()
    daemon = stack.daemon
    stop = threading.Event()
    published: list[int] = []

    def publish_steadily() -> None:
        # A steady flow for the whole reload; bounded in count.
        for n in range(5000):
            if stop.is_set():
                return
            daemon.publish("t", n)
            published.append(n)
            stop.wait(0.003)  # pacing, not a wait for anything

    client = await stack.stream("/events?topic=t")
    assert (await client.next()).event == "connected"
    thread = threading.Thread(target=publish_steadily, daemon=True)
    thread.start()
    try:
        received = [(await client.next()).json() for _ in range(10)]
        stack.nginx.reload()
        # The old worker keeps the stream until worker_shutdown_timeout, then closes it.
        with contextlib.suppress(asyncio.IncompleteReadError):
            received += [e.json() for e in await client.until_closed(timeout=15)]
        assert client.ended
        client.close()
        # The browser's EventSource reconnects with the last id it saw.
        resumed = await stack.stream("/events?topic=t", headers={"Last-Event-ID": client.last_id})
        assert (await resumed.next()).event == "connected"
        received.append((await resumed.next()).json())
    finally:
        stop.set()
        thread.join(10)
    daemon.publisher.publish("t", "end")
    received += await read_all_until(resumed, "end")
    resumed.close()
    assert received[-1] == "end"
    numbers = received[:-1]
    assert numbers == list(range(len(published)))
    assert "reconfiguring" in stack.nginx.log  # the reload did happen
