"""The fan-out benchmark: fanout against nginx + nchan, same scenario, same load.

    .venv/bin/python -m loadtest.bench                 # the full run (~10 minutes)
    .venv/bin/python -m loadtest.bench --smoke         # a few seconds: checks for loss
    .venv/bin/python -m loadtest.bench --scenarios s1-10k --servers fanout
    .venv/bin/python -m loadtest.bench --subs 2000 --rate 0 --duration 5   # flat out

See loadtest/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from .publisher import PublishSpec, publisher_main
from .servers import (
    Fanout,
    Nchan,
    Server,
    ServerError,
    cpu_seconds,
    rss_bytes,
    softnet_drops,
)
from .subscribers import WorkerSpec, worker_main

TOPIC = "bench"
PER_WORKER = 5_000  # subscribers per load-generator process (each < 19,000 sockets)
SAMPLED_CONNECTIONS = 100  # connections that parse every event's publish time
RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Scenario:
    name: str
    subs: int
    events: int
    rate: float  # events/s; 0 = flat out for `duration_s`
    payload: int = 200
    publishers: int = 1
    batch: int = 1
    broadcast: bool = False
    servers: tuple[str, ...] = ("fanout", "nchan")
    duration_s: float = 60.0
    note: str = ""
    repeat: int = 1  # runs per server, interleaved; the median run is reported
    topics: int = 1  # > 1: subscriber g on topic g % topics, event i to topic i % topics
    window: int = 64  # requests in flight per publisher connection when rate = 0


# Server variants: "fanout", "fanout+flush5" (flush_interval_ms = 5), "fanout-wN"
# (workers = N: a supervisor and N worker processes), "nchan".
FULL = [
    Scenario("s1-5k", 5_000, 100, 10, note="one event at a time, 5,000 subs, 10 ev/s", repeat=3),
    Scenario("s1-10k", 10_000, 200, 20, note="one event at a time, 10,000 subs, 20 ev/s", repeat=3),
    Scenario(
        "s2-single",
        1_000,
        2_000,
        1_000,
        publishers=8,
        servers=("fanout", "fanout+flush5", "nchan"),
        note="1,000 subs, 1,000 ev/s, 8 publisher connections, one event per request",
    ),
    Scenario(
        "s2-ndjson",
        1_000,
        2_000,
        1_000,
        publishers=8,
        batch=20,
        servers=("fanout", "fanout+flush5"),
        note="same rate as NDJSON batches of 20 (nchan has no batches: see s2-single)",
    ),
    Scenario("s5-1k", 1_000, 200, 20, note="cost growth: 1,000 subs, 20 ev/s", repeat=3),
    Scenario("s5-5k", 5_000, 200, 20, note="cost growth: 5,000 subs, 20 ev/s", repeat=3),
    Scenario(
        "s4-19k",
        19_000,
        20,
        2,
        broadcast=True,
        note="19,000 subs on one process, broadcast (nchan: one channel)",
    ),
]

# Scale out on one host (workers = N). On 2 cores with the load generator beside it,
# a second worker buys sockets (each process holds < 20,000) rather than speed.
WORKERS = [
    Scenario(
        "s7-1v2",
        10_000,
        200,
        20,
        servers=("fanout", "fanout-w2"),
        note="1 vs 2 workers: 10,000 subs, 20 ev/s",
    ),
    Scenario(
        "s7-50k",
        50_000,
        10,
        1,
        broadcast=True,
        servers=("fanout-w3",),
        note="50,000 subs over 3 workers, broadcast",
    ),
]

# Publish-bound: each publish reaches one subscriber (per-user notifications, a topic
# per job), so the request itself is the work. 8 connections as 8 app workers.
PUBLISH = [
    Scenario(
        "p1-wait",
        1_000,
        20_000,
        0,
        publishers=8,
        topics=1_000,
        window=1,
        repeat=3,
        note="1,000 topics x 1 sub, 20,000 publishes round-robin, 8 connections "
        "that each wait for their answer",
    ),
    Scenario(
        "p1-pipe",
        1_000,
        20_000,
        0,
        publishers=8,
        topics=1_000,
        window=16,
        repeat=3,
        note="the same, 16 requests pipelined per connection",
    ),
]

SMOKE = [
    Scenario("smoke", 200, 50, 100, publishers=2, duration_s=10, note="smoke: loss check"),
    Scenario("smoke-ndjson", 200, 60, 200, batch=10, servers=("fanout",), duration_s=10),
    Scenario("smoke-topics", 100, 1_000, 0, publishers=4, topics=100, window=4, duration_s=10),
]


def make_server(kind: str, workdir: Path, fanout_src: str | None = None) -> Server:
    if kind == "fanout":
        return Fanout(workdir, TOPIC, src=fanout_src).start()
    if kind.startswith("fanout+flush"):
        flush_ms = float(kind.removeprefix("fanout+flush"))
        return Fanout(workdir, TOPIC, flush_ms, src=fanout_src).start()
    if kind.startswith("fanout-w"):
        workers = int(kind.removeprefix("fanout-w"))
        return Fanout(workdir, TOPIC, src=fanout_src, workers=workers).start()
    if kind == "nchan":
        return Nchan(workdir, TOPIC).start()
    raise ValueError(f"unknown server {kind!r}")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    k = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return values[k]


class Workers:
    """The subscriber processes, driven over pipes."""

    def __init__(self, server: Server, subs: int, deadline_s: float, topics: int = 1) -> None:
        ctx = mp.get_context("fork")
        n = max(1, math.ceil(subs / PER_WORKER))
        if subs >= 400:
            n = max(n, 2)
        shares = [subs // n + (1 if i < subs % n else 0) for i in range(n)]
        per_sample = max(1, SAMPLED_CONNECTIONS // n)
        self.pipes: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        first = 0
        for i, share in enumerate(shares):
            spec = WorkerSpec(
                index=i,
                host=server.host,
                port=server.port,
                path=server.subscribe_path,
                count=share,
                # Each process binds its own source address: ephemeral ports are per
                # (source, destination) pair, so 127.0.0.2.. never run short.
                source=f"127.0.0.{2 + i}",
                sample_every=max(1, share // per_sample),
                lifetime_s=deadline_s,
                topics=topics,
                first=first,
            )
            first += share
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, spec), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def _recv(self, pipe: Connection, timeout: float) -> tuple[Any, ...]:
        if not pipe.poll(timeout):
            raise TimeoutError("a subscriber process did not answer in time")
        msg = pipe.recv()
        if msg[0] == "error":
            raise RuntimeError(msg[1])
        return msg  # type: ignore[no-any-return]

    def connected(self, timeout: float) -> tuple[int, int, float]:
        deadline = time.monotonic() + timeout
        ok = failed = 0
        slowest = 0.0
        for pipe in self.pipes:
            _, n_ok, n_failed, elapsed = self._recv(pipe, max(0.1, deadline - time.monotonic()))
            ok, failed, slowest = ok + n_ok, failed + n_failed, max(slowest, elapsed)
        return ok, failed, slowest

    def counts(self) -> tuple[int, int, float]:
        for pipe in self.pipes:
            pipe.send("counts")
        received = closed = 0
        cpu = 0.0
        for pipe in self.pipes:
            _, r, c, s = self._recv(pipe, 10)
            received, closed, cpu = received + r, closed + c, cpu + s
        return received, closed, cpu

    def latencies(self) -> list[float]:
        out: array[float] = array("d")
        for pipe in self.pipes:
            pipe.send("latency")
        for pipe in self.pipes:
            out.frombytes(self._recv(pipe, 10)[1])
        return sorted(out)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for pipe in self.pipes:
            pipe.close()


def start_profiler(server: Server, scn: Scenario, kind: str, out_dir: Path) -> Any:
    """py-spy on the daemon for the publish phase (fanout only): collapsed stacks."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"profile-{scn.name}-{kind}.txt"
    pid, seconds = str(server.pids()[0]), str(int(scn.duration_s + 60))
    args = [spy, "record", "--pid", pid, "--subprocesses", "--rate", "250", "--nonblocking"]
    args += ["--format", "raw"]
    args += ["--output", str(out), "--duration", seconds]
    return subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(spy: Any) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(5)


def run_one(
    scn: Scenario, kind: str, log: Any, fanout_src: str | None, profile: Path | None = None
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="fo-bench-", dir="/tmp"))
    server: Server | None = None
    workers: Workers | None = None
    pub_proc = None
    spy = None
    try:
        server = make_server(kind, workdir, fanout_src)
        spids = server.pids()
        rss0 = rss_bytes(spids)
        drops0 = softnet_drops()
        lifetime = scn.duration_s + 240
        t_connect = time.monotonic()
        workers = Workers(server, scn.subs, lifetime, scn.topics)
        ok, failed, connect_s = workers.connected(180)
        connect_wall = time.monotonic() - t_connect
        if failed:
            log(f"  {failed} of {scn.subs} subscribers failed to connect; server log:")
            log("    " + server.log_tail()[-600:].replace("\n", "\n    "))
        spids = server.pids()
        rss1 = rss_bytes(spids)
        drops1 = softnet_drops()
        received0, _, gen_cpu0 = workers.counts()

        spec = PublishSpec(
            kind=server.publish_kind,
            address=server.publish_address,
            topic=TOPIC,
            events=scn.events,
            payload_bytes=scn.payload,
            rate=scn.rate,
            connections=scn.publishers,
            batch=scn.batch if server.publish_kind == "fanout" else 1,
            broadcast=scn.broadcast and server.publish_kind == "fanout",
            duration_s=scn.duration_s,
            topics=scn.topics,
            window=scn.window,
        )
        ctx = mp.get_context("fork")
        pub_pipe, child = ctx.Pipe()
        pub_proc = ctx.Process(target=publisher_main, args=(child, spec), daemon=True)
        pub_proc.start()
        child.close()

        if profile is not None and kind.startswith("fanout"):
            spy = start_profiler(server, scn, kind, profile)
        cpu0 = cpu_seconds(spids)
        t0 = time.time()
        pub_pipe.send("go")
        published: dict[str, Any] | None = None
        last_total, last_change = received0, time.time()
        hard_deadline = time.monotonic() + scn.duration_s + 60
        quiet_s = 3.0
        while time.monotonic() < hard_deadline:
            if published is None and wait([pub_pipe], 0.05):
                msg = pub_pipe.recv()
                if msg[0] == "error":
                    raise RuntimeError(f"publisher: {msg[1]}")
                published = msg[1]
            elif published is not None:
                time.sleep(0.05)
            total, _, _ = workers.counts()
            now = time.time()
            if total != last_total:
                last_total, last_change = total, now
            if published is not None:
                expected = ok * published["sent_events"] // scn.topics
                if total - received0 >= expected or now - last_change > quiet_s:
                    break
        cpu1 = cpu_seconds(spids)
        if spy is not None:
            stop_profiler(spy)
            spy = None
        t_done = last_change
        received, closed, gen_cpu1 = workers.counts()
        drops2 = softnet_drops()
        lat = workers.latencies()
        pub_proc.join(10)
        if published is None:
            raise RuntimeError("the publisher did not finish in time")
        delivered = received - received0
        expected = scn.subs * published["sent_events"] // scn.topics
        publishes = published["sent_events"]
        pub_span = max(published["t_last"] - published["t_first"], 1e-9)
        cpu = cpu1 - cpu0
        span = max(t_done - t0, 1e-9)
        return {
            "scenario": scn.name,
            "server": kind,
            "subs": scn.subs,
            "connected": ok,
            "events": published["sent_events"],
            "rate": scn.rate,
            "payload": scn.payload,
            "publishers": scn.publishers,
            "batch": spec.batch,
            "delivered": delivered,
            "expected": expected,
            "lost": expected - delivered,
            "closed": closed,
            "publish_errors": published["errors"],
            "deliveries_per_s": delivered / span,
            "topics": scn.topics,
            "window": scn.window if scn.rate == 0 else None,
            # Publish-bound figures: the daemon's CPU over the publishes it took, and
            # the rate the publisher sent them at (every one answered before it ends).
            "publishes_per_s": publishes / pub_span,
            "cpu_us_per_publish": cpu / publishes * 1e6 if publishes else None,
            "daemon_cpu_s": cpu,
            "deliveries_per_cpu_s": delivered / cpu if cpu > 0 else None,
            "cpu_us_per_delivery": cpu / delivered * 1e6 if delivered else None,
            "latency_ms_p50": _percentile(lat, 0.50),
            "latency_ms_p99": _percentile(lat, 0.99),
            "latency_ms_max": lat[-1] if lat else None,
            "latency_samples": len(lat),
            "rss_per_conn_bytes": (rss1 - rss0) / ok if ok else None,
            "rss_idle_bytes": rss1,
            "connect_s": connect_s,
            "connect_wall_s": connect_wall,
            "loadgen_cpu_s": (gen_cpu1 - gen_cpu0) + published["cpu_s"],
            # Kernel input-backlog drops (machine-wide): during connects / publishing.
            "net_drops_connect": drops1 - drops0,
            "net_drops_publish": drops2 - drops1,
            "wall_s": span,
        }
    finally:
        if spy is not None:
            stop_profiler(spy)
        if pub_proc is not None and pub_proc.is_alive():
            pub_proc.kill()
            pub_proc.join(5)
        if workers is not None:
            workers.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# -- reporting ---------------------------------------------------------------

COLUMNS = [
    ("scenario", "scenario", "{}"),
    ("server", "server", "{}"),
    ("subs", "subs", "{:,}"),
    ("delivered", "delivered/expected", None),
    ("deliveries_per_s", "deliv/s", "{:,.0f}"),
    ("daemon_cpu_s", "daemon CPU s", "{:.2f}"),
    ("deliveries_per_cpu_s", "deliv/CPU-s", "{:,.0f}"),
    ("deliveries_per_cpu_s_all", "range (runs)", None),
    ("cpu_us_per_delivery", "µs/deliv", "{:.2f}"),
    ("publishes_per_s", "pub/s", "{:,.0f}"),
    ("cpu_us_per_publish", "µs/pub", "{:.1f}"),
    ("latency_ms_p50", "p50 ms", "{:.1f}"),
    ("latency_ms_p99", "p99 ms", "{:.1f}"),
    ("latency_ms_max", "max ms", "{:.1f}"),
    ("rss_per_conn_bytes", "RSS B/conn", "{:,.0f}"),
    ("connect_s", "connect s", "{:.2f}"),
    ("loadgen_cpu_s", "loadgen CPU s", "{:.2f}"),
    ("net_drops", "net drops", None),
]
RATIO_KEYS = [
    "deliveries_per_s",
    "daemon_cpu_s",
    "deliveries_per_cpu_s",
    "cpu_us_per_delivery",
    "publishes_per_s",
    "cpu_us_per_publish",
    "latency_ms_p50",
    "latency_ms_p99",
    "latency_ms_max",
    "rss_per_conn_bytes",
    "connect_s",
]


def _cell(row: dict[str, Any], key: str, fmt: str | None) -> str:
    if key == "delivered":
        return f"{row['delivered']:,}/{row['expected']:,}"
    if key == "net_drops":
        return f"{row['net_drops_connect']}/{row['net_drops_publish']}"
    if key == "deliveries_per_cpu_s_all":
        values = [v for v in row[key] if v is not None]
        if len(values) < 2:
            return "-"
        return f"{min(values) / 1000:,.0f}k-{max(values) / 1000:,.0f}k ({len(values)})"
    value = row.get(key)
    if value is None:
        return "-"
    return fmt.format(value) if fmt else str(value)


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each fanout row's figures divided by nchan's in the same scenario."""
    nchan = {r["scenario"]: r for r in rows if r["server"] == "nchan"}
    # The NDJSON scenario is compared with nchan's one-event-per-request run.
    nchan.setdefault("s2-ndjson", nchan.get("s2-single"))  # type: ignore[arg-type]
    out = []
    for row in rows:
        ref = nchan.get(row["scenario"])
        if row["server"] == "nchan" or ref is None:
            continue
        ratio: dict[str, Any] = {"scenario": row["scenario"], "server": f"{row['server']}/nchan"}
        for key in RATIO_KEYS:
            a, b = row.get(key), ref.get(key)
            ratio[key] = a / b if a is not None and b else None
        out.append(ratio)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |"]
    lines.append("|" + "---|" * len(COLUMNS))
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, k, f) for k, _, f in COLUMNS) + " |")
    rs = ratios(rows)
    if rs:
        keys = ["scenario", "server", *RATIO_KEYS]
        lines += ["", "Ratios to nchan (fanout ÷ nchan; deliv/CPU-s: higher is better):", ""]
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        for r in rs:
            cells = [r["scenario"], r["server"]]
            cells += ["-" if r[k] is None else f"{r[k]:.2f}x" for k in RATIO_KEYS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="a few seconds, small: checks loss")
    p.add_argument("--scenarios", help="comma-separated names (default: all of the mode)")
    p.add_argument("--servers", help="comma-separated: fanout, fanout+flush5, nchan")
    p.add_argument("--repeat", type=int, help="runs per scenario and server (median shown)")
    p.add_argument("--json", type=Path, help="where to write the results (default: results/)")
    p.add_argument(
        "--fanout-src",
        help="directory holding the fanout package to benchmark (default: the installed one), "
        "e.g. a `git archive HEAD fanout` snapshot while the work tree is being edited",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="run py-spy on fanout during publishing; collapsed stacks go to this directory "
        "(the figures of a profiled run carry the sampler's overhead)",
    )
    custom = p.add_argument_group("a custom scenario instead of the built-in ones")
    custom.add_argument("--subs", type=int, help="N subscribers")
    custom.add_argument("--events", type=int, default=1_000_000, help="E events (default: many)")
    custom.add_argument("--rate", type=float, default=0, help="R events/s; 0 = flat out")
    custom.add_argument("--payload", type=int, default=200, help="P bytes of event data")
    custom.add_argument("--publishers", type=int, default=1, help="publisher connections")
    custom.add_argument("--batch", type=int, default=1, help="events per NDJSON request")
    custom.add_argument("--broadcast", action="store_true", help="POST /broadcast (fanout)")
    custom.add_argument("--duration", type=float, default=10, help="bound on publishing, s")
    return p.parse_args(argv)


def select(args: argparse.Namespace) -> list[tuple[Scenario, str]]:
    if args.subs:
        scenarios = [
            Scenario(
                "custom",
                args.subs,
                args.events,
                args.rate,
                args.payload,
                args.publishers,
                args.batch,
                args.broadcast,
                duration_s=args.duration,
            )
        ]
    else:
        scenarios = SMOKE if args.smoke else FULL + PUBLISH + WORKERS
        if args.scenarios:
            wanted = set(args.scenarios.split(","))
            scenarios = [s for s in scenarios if s.name in wanted]
    runs = []
    only = set(args.servers.split(",")) if args.servers else None
    for scn in scenarios:
        servers = scn.servers
        if only is not None:
            servers = tuple(s for s in servers if s in only)
            scn = replace(scn, servers=servers)
        if args.repeat:
            scn = replace(scn, repeat=args.repeat)
        for _ in range(scn.repeat):
            for kind in servers:  # interleaved, so drifts of the machine hit both
                runs.append((scn, kind))
    return runs


def medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, server): the run with the median deliveries per CPU-s,
    with every run's main figures beside it and the loss summed over all runs."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["server"]), []).append(row)
    out = []
    for group in groups.values():
        ranked = sorted(group, key=lambda r: r["deliveries_per_cpu_s"] or 0)
        row = dict(ranked[(len(ranked) - 1) // 2])
        row["runs"] = len(group)
        row["deliveries_per_cpu_s_all"] = [r["deliveries_per_cpu_s"] for r in group]
        row["latency_ms_p99_all"] = [r["latency_ms_p99"] for r in group]
        row["lost_all_runs"] = sum(r["lost"] for r in group)
        out.append(row)
    return out


def _git_head() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip()
    return ""


def _snapshot_commit(src: str | None) -> str:
    marker = Path(src) / "COMMIT" if src else None
    if marker is not None and marker.exists():
        return marker.read_text().strip()
    return ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    git_head = _git_head()
    runs = select(args)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    all_rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for scn, kind in runs:
        if kind == "nchan" and not Nchan.available():
            log(f"{scn.name} / nchan: skipped, nginx or libnginx-mod-nchan not installed")
            continue
        log(f"{scn.name} / {kind}: {scn.subs:,} subs, {scn.events:,} events at {scn.rate:g}/s")
        started = time.monotonic()
        try:
            row = run_one(scn, kind, log, args.fanout_src, args.profile)
        except (ServerError, RuntimeError, TimeoutError, OSError) as exc:
            failures.append(f"{scn.name} / {kind}: {exc}")
            log(f"  FAILED: {exc}\n{traceback.format_exc()}")
            continue
        all_rows.append(row)
        log(
            f"  {row['delivered']:,}/{row['expected']:,} delivered, "
            f"{row['deliveries_per_cpu_s'] or 0:,.0f} deliveries per CPU-s, "
            f"p99 {row['latency_ms_p99'] or 0:.1f} ms ({time.monotonic() - started:.0f} s)"
        )
    rows = medians(all_rows)
    out = args.json
    if out is None:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / time.strftime("bench-%Y%m%d-%H%M%S.json")
    report = {
        "command": " ".join(["python -m loadtest.bench", *(argv or sys.argv[1:])]),
        "machine": {"cpus": mp.cpu_count(), "python": sys.version.split()[0]},
        "fanout_src": args.fanout_src or "installed package",
        "git_head": git_head,
        "fanout_src_commit": _snapshot_commit(args.fanout_src),
        "scenarios": [asdict(s) for s in {s.name: s for s, _ in runs}.values()],
        "results": rows,
        "all_runs": all_rows,
        "ratios": ratios(rows),
        "failures": failures,
    }
    out.write_text(json.dumps(report, indent=2))
    print(table(rows))
    if failures:
        print("\nFailed runs:\n" + "\n".join(failures))
    print(f"\nJSON: {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
