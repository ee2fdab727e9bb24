"""GET /metrics: the /stats counters in Prometheus text format.

prometheus_client renders the exposition format (escaping, TYPE/HELP lines, content
type) so we don't hand-write it; a collector reads the /stats snapshot at scrape
time, so nothing is added to the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_COUNTERS = {
    "published": "Events accepted from publishers",
    "delivered": "Event frames written to subscriber sockets",
    "dropped_slow": "Subscribers disconnected for exceeding max_buffered_bytes",
    "evicted": "Connections closed by the evict-oldest per-user policy",
    "heartbeats": "Heartbeat comments written",
    "timeouts": "Connections closed for not completing their headers in time",
    "replays": "Resumes served from the replay rings",
    "replayed_events": "Events sent from the replay rings",
    "resets": "Resumes told that continuity was lost",
}
_GAUGES = {
    "connections": "Open subscriber streams",
    "users": "Users with at least one open stream",
    "topics": "Topics with at least one subscriber",
    "retained_events": "Events held for replay",
    "retained_bytes": "Bytes of events held for replay",
}


class _Collector:
    def __init__(self, stats: dict[str, Any]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        for name, text in _COUNTERS.items():
            yield CounterMetricFamily(f"fanout_{name}", text, value=stats[name])
        for name, text in _GAUGES.items():
            yield GaugeMetricFamily(f"fanout_{name}", text, value=stats[name])
        refused = CounterMetricFamily(
            "fanout_refused", "Connections refused, by HTTP status", labels=["status"]
        )
        for status, count in stats["refused"].items():
            refused.add_metric([status], count)
        yield refused


def render(stats: dict[str, Any]) -> bytes:
    """The /stats snapshot as Prometheus text (built per scrape; scrapes are rare)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats))
    return generate_latest(registry)
