"""Builds deploy/grafana/fanout.json, the Grafana dashboard for fanout's /metrics.

Written with Grafana's own Foundation SDK (typed builders generated from Grafana's
dashboard schema), so the JSON is schema-valid by construction; mypy checks the
builder calls. tests/integration/test_grafana.py checks that the committed JSON is
what this writes, and that every query names a metric a real daemon exposes.

    .venv/bin/python deploy/grafana/dashboard.py      # rewrites fanout.json
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueGraphMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DynamicConfigValue,
    VariableRefresh,
)

OUT = Path(__file__).with_name("fanout.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every series is summed over the selected instances (daemons, or hosts of a backplane).
SELECTED = '{instance=~"$instance"}'
# Panel ids, unique within the dashboard (links and the panel editor use them).
_ids = itertools.count(1)


def row(title: str) -> dashboard.Row:
    return dashboard.Row(title).id(next(_ids))


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()


def rate(metric: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping}(rate({metric}{SELECTED}[$__rate_interval]))"


def gauge(metric: str) -> str:
    return f"sum({metric}{SELECTED})"


def series(
    title: str, description: str, unit: str, *queries: prometheus.Dataquery, span: int = 12
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(next(_ids))
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .fill_opacity(10)
        .span(span)
        .height(8)
    )
    for q in queries:
        panel.with_target(q)
    return panel


def number(title: str, description: str, unit: str, expr: str) -> stat.Panel:
    return (
        stat.Panel()
        .id(next(_ids))
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .graph_mode(BigValueGraphMode.AREA)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        .span(6)
        .height(4)
        .with_target(query(expr, title))
    )


def build() -> dashboard.Dashboard:
    return (
        dashboard.Dashboard("fanout")
        .uid("fanout-sse")
        .description("fanout SSE daemon: connections, publish and delivery, drops, refusals")
        .tags(["fanout", "sse"])
        .refresh("30s")
        .time("now-1h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("instance")
            .label("Instance")
            .datasource(DATASOURCE)
            .query("label_values(fanout_connections, instance)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_row(row("Now"))
        .with_panel(
            number("Connections", "Open subscriber streams", "short", gauge("fanout_connections"))
        )
        .with_panel(
            number(
                "Published",
                "Events accepted from publishers, per second",
                "ops",
                rate("fanout_published_total"),
            )
        )
        .with_panel(
            number(
                "Delivered",
                "Event frames written to subscriber sockets, per second",
                "ops",
                rate("fanout_delivered_total"),
            )
        )
        .with_panel(
            number(
                "Refused",
                "Connections refused (all statuses), per second",
                "ops",
                rate("fanout_refused_total"),
            )
        )
        .with_row(row("Connections"))
        .with_panel(
            series(
                "Connections, users and topics",
                "Open streams; users with at least one; topics with at least one subscriber",
                "short",
                query(gauge("fanout_connections"), "connections", "A"),
                query(gauge("fanout_users"), "users", "B"),
                query(gauge("fanout_topics"), "topics", "C"),
            )
        )
        .with_panel(
            series(
                "Refused, by status",
                "429: per-user limit; 503: daemon full; 4xx: bad requests",
                "ops",
                query(rate("fanout_refused_total", by="status"), "{{status}}"),
            )
        )
        .with_row(row("Throughput"))
        .with_panel(
            series(
                "Published and delivered",
                "Delivered / published is the fan-out",
                "ops",
                query(rate("fanout_published_total"), "published", "A"),
                query(rate("fanout_delivered_total"), "delivered", "B"),
            )
        )
        .with_panel(
            series(
                "Drops, evictions and timeouts",
                "Slow readers cut (max_buffered_bytes), connections evicted by the per-user"
                " policy, requests whose headers did not arrive in time",
                "ops",
                query(rate("fanout_dropped_slow_total"), "dropped slow", "A"),
                query(rate("fanout_evicted_total"), "evicted", "B"),
                query(rate("fanout_timeouts_total"), "header timeouts", "C"),
            )
        )
        .with_row(row("Replay"))
        .with_panel(
            series(
                "Resumes",
                "Resumes served from the replay rings, events they sent, and resumes told"
                " that continuity was lost",
                "ops",
                query(rate("fanout_replays_total"), "resumes", "A"),
                query(rate("fanout_replayed_events_total"), "replayed events", "B"),
                query(rate("fanout_resets_total"), "resets", "C"),
            )
        )
        .with_panel(
            series(
                "Retained for replay",
                "Events and bytes held in the replay rings (bounded by [replay])",
                "short",
                query(gauge("fanout_retained_events"), "events", "A"),
                query(gauge("fanout_retained_bytes"), "bytes", "B"),
                span=8,
            ).override_by_name("bytes", [DynamicConfigValue("unit", "bytes")])
        )
        .with_panel(
            series(
                "Heartbeats",
                "Keep-alive comments written to idle streams",
                "ops",
                query(rate("fanout_heartbeats_total"), "heartbeats"),
                span=4,
            )
        )
    )


def render() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
