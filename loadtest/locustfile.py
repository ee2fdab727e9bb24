"""Locust load test: SSE subscribers over HTTP, one publisher on the control socket.

Every event carries its publish time; each subscriber records, per event, the
publish-to-receive latency as a locust request entry ("SSE" / "event latency"), so
the web UI, the console summary and --csv show its percentiles next to the
connect time of the streams ("GET /events"). A gap in a topic's sequence is a
failure: subscribers reconnect every --stream-seconds with Last-Event-ID, which
must fill it in. Headless, 10 s, 50 users (see deploy/README.md):

    locust -f loadtest/locustfile.py --headless -u 50 -r 50 -t 10s \
        --host http://127.0.0.1:8080 --control-socket ./run/fanout.sock

The publish time is read from the wall clock of the publisher's host: run locust
on the daemon's host (or keep clocks in sync) for the latencies to mean anything.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from typing import Any

import orjson
from locust import HttpUser, User, constant, constant_throughput, events, task
from locust.env import Environment

from fanout.client import Publisher, PublishError


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("fanout")
    group.add_argument(
        "--control-socket",
        default="./run/fanout.sock",
        help="fanout's control socket, for the publisher user",
    )
    group.add_argument("--topics", type=int, default=10, help="topics load-0 .. load-N-1")
    group.add_argument(
        "--publish-rate", type=float, default=50.0, help="events per second, all topics"
    )
    group.add_argument(
        "--payload-bytes", type=int, default=64, help="padding added to each event's data"
    )
    group.add_argument(
        "--cookie",
        default="",
        help="Cookie header for the streams (through nginx's auth_request)",
    )
    group.add_argument(
        "--stream-seconds",
        type=float,
        default=60.0,
        help="each subscriber reconnects (with Last-Event-ID) after this long",
    )


def _fire(
    environment: Environment,
    kind: str,
    name: str,
    ms: float,
    length: int = 0,
    exception: Exception | None = None,
) -> None:
    environment.events.request.fire(
        request_type=kind,
        name=name,
        response_time=ms,
        response_length=length,
        exception=exception,
        context={},
    )


class GapError(Exception):
    """Events of a topic went missing between two that arrived."""


class SSESubscriber(HttpUser):
    """One EventSource: stream a topic, parse events, resume with Last-Event-ID."""

    weight = 50
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.topic = f"load-{random.randrange(options.topics)}"
        self.last_id: str | None = None
        # EventSource waits the stream's `retry:` (ms) before reconnecting; the
        # events published meanwhile must come back through Last-Event-ID.
        self.retry_s = 3.0
        # (publisher, topic) -> last sequence number seen, to detect gaps.
        self.seen: dict[str, int] = {}

    @task
    def stream(self) -> None:
        options = self.environment.parsed_options
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if options.cookie:
            headers["Cookie"] = options.cookie
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        until = time.monotonic() + options.stream_seconds
        # `name` groups every stream under one entry; its time is time-to-headers,
        # reported (a status >= 400 as a failure) before the body is read.
        response = self.client.get(
            f"/events?topic={self.topic}",
            headers=headers,
            stream=True,
            name="GET /events",
            timeout=(10, 60),
        )
        try:
            if response.status_code == 200:
                self._read(response, until)
        finally:
            response.close()
        time.sleep(self.retry_s)  # cooperative: locust runs users on gevent

    def _read(self, response: Any, until: float) -> None:
        event, data, event_id = "message", [], None
        # Lines come out as soon as their chunk arrives; nothing here waits for a
        # buffer to fill (chunk_size only bounds each read).
        for line in response.iter_lines(chunk_size=65536, decode_unicode=True):
            if line:
                if line.startswith(":"):
                    continue  # heartbeat
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
                elif name == "id":
                    event_id = value
                elif name == "retry" and value.isdigit():
                    self.retry_s = int(value) / 1000
                continue
            if event_id is not None:
                self.last_id = event_id
            if data:
                self._on_event(event, "\n".join(data))
            event, data, event_id = "message", [], None
            if time.monotonic() >= until:
                return  # reconnect, as a browser does after a network change

    def _on_event(self, event: str, text: str) -> None:
        if event != "load":
            return  # "connected", "reset": not published by the load test
        received = time.time()
        body = orjson.loads(text)
        key = f"{body['p']}/{self.topic}"
        previous = self.seen.get(key)
        self.seen[key] = body["n"]
        exception = None
        if previous is not None and body["n"] != previous + 1:
            exception = GapError(f"{key}: {previous} then {body['n']}")
        latency_ms = max(0.0, (received - body["ts"]) * 1000)
        _fire(self.environment, "SSE", "event latency", latency_ms, len(text), exception)


class FanoutPublisher(User):
    """Publishes to the topics in turn at --publish-rate, over the control socket."""

    fixed_count = 1  # one publisher, however many subscribers are spawned

    def wait_time(self) -> float:
        return float(self.pace(self))

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.pace = constant_throughput(options.publish_rate)
        self.publisher = Publisher(options.control_socket)
        self.id = uuid.uuid4().hex[:8]
        self.topics = itertools.cycle(range(options.topics))
        self.counters = [0] * options.topics
        self.padding = "x" * options.payload_bytes

    def on_stop(self) -> None:
        self.publisher.close()

    @task
    def publish(self) -> None:
        index = next(self.topics)
        n = self.counters[index] + 1
        data = {"p": self.id, "n": n, "ts": time.time(), "pad": self.padding}
        start = time.perf_counter()
        exception: Exception | None = None
        try:
            self.publisher.publish(f"load-{index}", data, event="load")
        except (PublishError, OSError) as exc:
            exception = exc
        else:
            self.counters[index] = n
        _fire(
            self.environment,
            "PUBLISH",
            "/publish",
            (time.perf_counter() - start) * 1000,
            0,
            exception,
        )
