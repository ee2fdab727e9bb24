"""A 10-second headless locust smoke run of loadtest/locustfile.py: no failure allowed.

About 50 users (49 subscribers, 1 publisher) against the real daemon. Locust exits
non-zero on any failure (a refused stream, a publish error, a gap in a topic's
sequence); the CSV must also show the per-event latency entries.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

LOCUST = Path(sys.executable).parent / "locust"
LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not LOCUST.exists(), reason="locust is not installed (pip install -e .[test])"
    ),
]


def test_locust_smoke(start_daemon, short_tmp: Path) -> None:
    # Subscribers wait retry_ms before each reconnect, as EventSource does: events
    # published meanwhile reach them only through Last-Event-ID.
    daemon = start_daemon({"stream": {"heartbeat_interval_s": 1.0, "retry_ms": 300}})
    csv_prefix = short_tmp / "smoke"
    command = [
        str(LOCUST),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        "50",
        "--spawn-rate",
        "50",
        "--run-time",
        "10s",
        "--stop-timeout",
        "2",
        "--host",
        f"http://{daemon.host}:{daemon.port}",
        "--control-socket",
        daemon.control,
        "--topics",
        "5",
        "--publish-rate",
        "50",
        # Each subscriber also resumes with Last-Event-ID a few times in the run.
        "--stream-seconds",
        "3",
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=short_tmp)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    with open(f"{csv_prefix}_stats.csv", newline="") as f:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    latency = rows[("SSE", "event latency")]
    published = rows[("PUBLISH", "/publish")]
    streams = rows[("GET", "GET /events")]
    for row in (latency, published, streams):
        assert row["Failure Count"] == "0", output
    assert int(streams["Request Count"]) >= 49
    assert int(published["Request Count"]) > 100
    # Every subscriber is on one of 5 topics: each event reaches about 49/5 of them.
    assert int(latency["Request Count"]) > int(published["Request Count"])
    # Loopback, one host: a publish reaches subscribers well within a second.
    assert float(latency["50%"]) < 1000, latency
