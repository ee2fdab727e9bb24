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

from .stats import COUNTERS, GAUGES

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, stats: dict[str, Any]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        for name, text in COUNTERS.items():
            yield CounterMetricFamily(f"fanout_{name}", text, value=stats[name])
        for name, text in GAUGES.items():
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
