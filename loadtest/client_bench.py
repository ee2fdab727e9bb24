"""Publishes per second from one Python process, with fanout's own clients.

    .venv/bin/python -m loadtest.client_bench                      # 20,000 per mode
    .venv/bin/python -m loadtest.client_bench --fanout-src /tmp/fo-c481b4b   # another commit

Starts a fresh daemon (loadtest.servers.Fanout, no subscribers: the figure is the
client's), then publishes 200-byte payloads round-robin over 1,000 topics:

- Publisher.publish, one call after another (a Django view, a Celery task);
- AsyncPublisher.publish, awaited one after another;
- AsyncPublisher.publish, 64 calls in flight (asyncio.gather in windows);
- Publisher.publish_many, batches of 100 (one NDJSON request each).

Reports publishes/s and the client process's CPU per publish (the daemon's CPU is
beside it, as a check that the daemon was not the bound). Each mode is bounded in
count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .servers import Fanout, cpu_seconds

TOPICS = 1_000
WINDOW = 64
BATCH = 100
_PAD = "x" * 150  # with the time: about 200 bytes of data, as in the benchmark


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _data() -> dict[str, Any]:
    return {"t": time.time(), "p": _PAD}


def run_modes(socket_path: str, n: int, daemon_pids: list[int]) -> list[dict[str, Any]]:
    from fanout.client import AsyncPublisher, Publisher  # from --fanout-src if given

    rows = []

    def measure(name: str, fn: Callable[[], int]) -> None:
        cpu0, d0, t0 = _cpu(), cpu_seconds(daemon_pids), time.perf_counter()
        done = fn()
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        daemon = cpu_seconds(daemon_pids) - d0
        rows.append(
            {
                "mode": name,
                "publishes": done,
                "publishes_per_s": done / wall,
                "client_cpu_us_per_publish": cpu / done * 1e6,
                "daemon_cpu_us_per_publish": daemon / done * 1e6,
            }
        )

    def sync_each() -> int:
        with Publisher(socket_path) as pub:
            for i in range(n):
                pub.publish(f"bench{i % TOPICS}", _data(), event="m")
        return n

    def sync_batches() -> int:
        with Publisher(socket_path) as pub:
            for start in range(0, n, BATCH):
                pub.publish_many(
                    [
                        {"topic": f"bench{i % TOPICS}", "event": "m", "data": _data()}
                        for i in range(start, min(n, start + BATCH))
                    ]
                )
        return n

    async def async_each() -> int:
        async with AsyncPublisher(socket_path) as pub:
            for i in range(n):
                await pub.publish(f"bench{i % TOPICS}", _data(), event="m")
        return n

    async def async_window() -> int:
        async with AsyncPublisher(socket_path) as pub:
            for start in range(0, n, WINDOW):
                await asyncio.gather(
                    *(
                        pub.publish(f"bench{i % TOPICS}", _data(), event="m")
                        for i in range(start, min(n, start + WINDOW))
                    )
                )
        return n

    measure("Publisher.publish, one at a time", sync_each)
    measure("AsyncPublisher.publish, awaited one at a time", lambda: asyncio.run(async_each()))
    measure(f"AsyncPublisher.publish, {WINDOW} in flight", lambda: asyncio.run(async_window()))
    measure(f"Publisher.publish_many, batches of {BATCH}", sync_batches)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.client_bench", description=__doc__)
    p.add_argument("--publishes", type=int, default=20_000)
    p.add_argument("--fanout-src", help="directory holding the fanout package (client and daemon)")
    args = p.parse_args(argv)
    if args.fanout_src:
        sys.path.insert(0, args.fanout_src)
    workdir = Path(tempfile.mkdtemp(prefix="fo-client-", dir="/tmp"))
    server = Fanout(workdir, "bench", src=args.fanout_src).start()
    try:
        rows = run_modes(server.control, args.publishes, server.pids())
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("| mode | publishes | publishes/s | client CPU µs/publish | daemon CPU µs/publish |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['publishes']:,} | {r['publishes_per_s']:,.0f} | "
            f"{r['client_cpu_us_per_publish']:.1f} | {r['daemon_cpu_us_per_publish']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
