"""The Python cost of one publish, in process, stage by stage (no sockets, no syscalls).

    .venv/bin/python -m loadtest.control_cost            # 20,000 publishes, 1,000 topics
    .venv/bin/python -m loadtest.control_cost --profile  # and cProfile's top functions

The real ControlProtocol, ControlApi and Hub (default config), one subscriber per topic
on a transport that only keeps the byte count: what the benchmark's p1 scenarios
cost the daemon minus the system calls (read, write to the publisher, write to the
subscriber, epoll). Each stage is timed on its own over the same requests:

- parse+answer: ControlProtocol.data_received with a backend that publishes nothing
  (it answers a constant delivery): llhttp, routing, validation, the answer bytes;
- validate: publish.decode_publish_items alone;
- hub.publish_many: the hub's part (ids, SSE encoding, retention, queueing);
- hub.flush: writing the queued frames to the subscribers' transports;
- end to end: all of it, as the daemon runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Callable
from typing import Any, ClassVar

from fanout.config import Limits, Replay, Stream
from fanout.control import ControlApi, ControlProtocol
from fanout.hub import Delivery, Hub
from fanout.publish import decode_publish_items

from .publisher import event_data


class CountingTransport:
    """Enough of asyncio.Transport for the hub and the control protocol."""

    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class ConstantBackend:
    """Publishes nothing: isolates the control protocol's own cost."""

    draining = False
    _one: ClassVar[list[Delivery]] = [Delivery("e-1", 1, 1)]

    def publish_many(self, items: list[tuple[str, str, bytes, str | None]]) -> list[Delivery]:
        return self._one

    def broadcast(self, event: str, payload: bytes) -> Delivery:
        return self._one[0]

    def notify(self, user: str, event: str, payload: bytes) -> Delivery:
        return self._one[0]

    def send(self, connection_id: str, event: str, payload: bytes) -> Delivery | None:
        return None


def make_hub(topics: int) -> Hub:
    hub = Hub(
        epoch="e",
        limits=Limits(),
        stream=Stream(),
        replay=Replay(),
        clock=time.monotonic,
        schedule_flush=lambda fn: None,  # flushed explicitly, as the loop's call_soon would
    )
    for i in range(topics):
        sub = hub.new_subscriber(CountingTransport(), True, None, frozenset({f"bench{i}"}))  # type: ignore[arg-type]
        hub.open(sub, None)
    return hub


def requests(n: int, topics: int, payload: int) -> list[bytes]:
    out = []
    for i in range(n):
        body = b'{"topic":"bench%d","event":"m","data":%s}' % (i % topics, event_data(payload))
        out.append(
            b"POST /publish HTTP/1.1\r\nHost: fanout\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    return out


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def measure(n: int, topics: int, payload: int, profile: bool) -> dict[str, float]:
    reqs = requests(n, topics, payload)
    bodies = [r.partition(b"\r\n\r\n")[2] for r in reqs]
    items = [decode_publish_items(b, "application/json")[0] for b in bodies]
    loop = asyncio.new_event_loop()  # ControlProtocol needs none for sync answers
    out: dict[str, float] = {}

    proto = ControlProtocol(ControlApi(ConstantBackend(), dict), 1 << 20)
    proto.connection_made(CountingTransport())  # type: ignore[arg-type]
    out["parse+answer"] = _timed(lambda: [proto.data_received(r) for r in reqs])
    out["validate"] = _timed(lambda: [decode_publish_items(b, "application/json") for b in bodies])

    hub = make_hub(topics)

    def publish_then_flush() -> None:
        for batch in items:
            hub.publish_many(batch)

    out["hub.publish_many"] = _timed(publish_then_flush)
    out["hub.flush"] = _timed(hub.flush)

    hub = make_hub(topics)
    proto = ControlProtocol(ControlApi(hub, dict), 1 << 20)
    proto.connection_made(CountingTransport())  # type: ignore[arg-type]

    def end_to_end() -> None:
        # As the daemon: each read's requests, then the loop's flush callback.
        for r in reqs:
            proto.data_received(r)
            hub.flush()

    if profile:
        prof = cProfile.Profile()
        prof.enable()
        out["end to end"] = _timed(end_to_end)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        out["end to end"] = _timed(end_to_end)
    loop.close()
    return {k: v / n * 1e6 for k, v in out.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.control_cost", description=__doc__)
    p.add_argument("--publishes", type=int, default=20_000)
    p.add_argument("--topics", type=int, default=1_000)
    p.add_argument("--payload", type=int, default=200)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    result: dict[str, Any] = measure(args.publishes, args.topics, args.payload, args.profile)
    print("| stage | CPU µs per publish |\n|---|---|")
    for stage, us in result.items():
        print(f"| {stage} | {us:.2f} |")


if __name__ == "__main__":
    main()
