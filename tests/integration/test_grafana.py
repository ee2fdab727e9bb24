"""deploy/grafana/fanout.json: schema-valid, and every query names a metric that the
/metrics of a real daemon exposes (and every exposed metric is on the dashboard)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon, wait_for

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
METRIC = re.compile(r"\bfanout_[a-z_]+\b")


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_dashboard", GRAFANA / "dashboard.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / "fanout.json").read_text())
    return data


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    variables = [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs + variables


async def scrape(daemon: Daemon) -> str:
    reader, writer = await asyncio.open_unix_connection(daemon.control)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def test_the_committed_dashboard_is_what_the_generator_writes() -> None:
    # Regenerate with: .venv/bin/python deploy/grafana/dashboard.py
    assert (GRAFANA / "fanout.json").read_text() == generator().render()


def test_the_dashboard_round_trips_through_grafanas_schema_model() -> None:
    # Every field is one the schema knows: parsing into the SDK's model and writing
    # it back loses nothing.
    data = committed()
    model = DashboardModel.from_json(data)
    again = json.loads(json.dumps(model, cls=generator().JSONEncoder))
    assert again == data
    assert data["schemaVersion"] >= 39
    assert data["uid"] == "fanout-sse"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in data["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.integration
async def test_every_query_names_an_exposed_metric(start_daemon: Any) -> None:
    daemon: Daemon = start_daemon()
    # fanout_refused_total has samples only once something was refused.
    conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=5)
    conn.request("GET", "/nope")
    assert conn.getresponse().status == 404
    conn.close()
    families = list(text_string_to_metric_families(await scrape(daemon)))
    exposed = {s.name for f in families for s in f.samples}
    assert "fanout_refused_total" in exposed

    used: set[str] = set()
    for expr in queries(committed()):
        names = set(METRIC.findall(expr))
        assert names, f"no fanout metric in {expr!r}"
        assert names <= exposed, f"{expr!r} names {names - exposed}, not in /metrics"
        used |= names
    # And nothing /metrics exposes is left off the dashboard.
    assert {s.name for f in families for s in f.samples if s.name.startswith("fanout_")} <= used


NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
NGINX_WRAPPER = """\
{user}
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {dir}/metrics.conf;
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_recipe(port: int, control: str) -> str:
    text = (GRAFANA / "nginx-metrics.conf").read_text()
    for old, new in {
        "listen 127.0.0.1:9464;": f"listen 127.0.0.1:{port};",
        "unix:/run/fanout/control.sock:": f"unix:{control}:",
    }.items():
        # If the file drifts from what its header documents, say so here.
        assert old in text, f"nginx-metrics.conf no longer contains {old!r}"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def nginx(work: Path, control: str) -> Iterator[int]:
    """nginx in the foreground on the recipe; yields its port."""
    assert NGINX is not None, "nginx is missing: run `bash tests/run.sh`, which installs it"
    (work / "tmp").mkdir(parents=True)
    # As root, workers would run as nobody, who cannot enter the temp dir.
    user = "user root;" if os.geteuid() == 0 else ""
    (work / "nginx.conf").write_text(NGINX_WRAPPER.format(dir=work, user=user))
    log = work / "e.log"
    command = [NGINX, "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(log)]
    # The port is picked free, then bound by nginx: retry if another process took it.
    for _ in range(3):
        port = free_port()
        (work / "metrics.conf").write_text(render_recipe(port, control))
        proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)

        def up_or_exited(proc: subprocess.Popen[bytes] = proc, port: int = port) -> str | None:
            if proc.poll() is not None:
                return "exited"
            with socket.socket() as sock:
                return "up" if sock.connect_ex(("127.0.0.1", port)) == 0 else None

        state = wait_for(up_or_exited, 10, "nginx to listen")
        if state == "up":
            try:
                yield port
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
            return
        if "Address already in use" not in log.read_text(errors="replace"):
            break
    raise RuntimeError(f"nginx did not start:\n{log.read_text(errors='replace')}")


@pytest.mark.integration
def test_the_nginx_recipe_exposes_metrics_and_nothing_else(
    start_daemon: Any, short_tmp: Path
) -> None:
    daemon: Daemon = start_daemon()
    with nginx(short_tmp / "nginx", daemon.control) as port:

        def ask(method: str, path: str) -> tuple[int, str]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request(method, path, body=b"{}" if method == "POST" else None)
                response = conn.getresponse()
                return response.status, response.read().decode(errors="replace")
            finally:
                conn.close()

        status, body = ask("GET", "/metrics")
        assert status == 200
        assert "fanout_connections" in body
        assert ask("POST", "/metrics")[0] == 403
        assert ask("POST", "/publish")[0] == 404
        assert ask("GET", "/stats")[0] == 404
