"""The benchmark's smoke mode: a few seconds, real daemon (and real nginx + nchan when
installed), checks that every event reaches every subscriber. It checks no speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.servers import Nchan

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_smoke_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    servers = "fanout,nchan" if Nchan.available() else "fanout"
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--smoke", "--servers", servers, "--json", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    rows = report["results"]
    fanout = [r for r in rows if r["server"] == "fanout"]
    assert {r["scenario"] for r in fanout} == {"smoke", "smoke-ndjson", "smoke-topics"}
    for row in rows:
        assert row["connected"] == row["subs"], row
        # One subscriber per topic in smoke-topics: each event reaches subs / topics.
        assert row["expected"] == row["subs"] * row["events"] // row["topics"] > 0, row
        assert row["delivered"] == row["expected"], row
        assert row["closed"] == 0, row
        assert row["lost_all_runs"] == 0, row
        assert not row["publish_errors"], row
        assert row["latency_samples"] > 0, row
        assert row["cpu_us_per_publish"] is not None, row
    if Nchan.available():
        assert any(r["server"] == "nchan" for r in rows)
