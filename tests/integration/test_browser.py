"""fanout.js and the demo page in a real headless Chromium (Debian's, via chromedriver).

The page's origin is a small TCP proxy in front of the daemon, standing in for nginx:
it can cut every connection while the daemon stays up (events published meanwhile
are retained, and the page must get them all on resume), and it keeps the page's
origin when the daemon behind it restarts on a new port. Retention is in memory and
each run has its own epoch, so across a real restart nothing can be replayed: there
the page must be told, through onReset, and refetch its state.

Every wait is a condition polled under a deadline; nothing sleeps to synchronise.
`bash tests/run.sh` installs chromium and chromium-driver; without them these fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import Daemon

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_S = 20.0

Driver = webdriver.Chrome


# -- a cuttable proxy ----------------------------------------------------------


class Proxy:
    """TCP proxy on its own loop thread; `cut()` drops everything, `resume()` re-admits."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    def start(self) -> Proxy:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        return self

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    def _call(self, fn: Callable[[], None]) -> None:
        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def cut(self) -> None:
        def do() -> None:
            self.up = False
            for w in list(self._writers):
                w.transport.abort()

        self._call(do)

    def resume(self, target_port: int | None = None) -> None:
        def do() -> None:
            if target_port is not None:
                self.target_port = target_port
            self.up = True

        self._call(do)

    def close(self) -> None:
        def do() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()

        self._call(do)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def driver() -> Iterator[Driver]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: run `bash tests/run.sh`, which installs it")
    profile = tempfile.mkdtemp(prefix="fo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The flags this machine's closed network needs (see the env notes): no
    # background connections that would be refused, no sandbox as root.
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    chrome.set_script_timeout(WAIT_S)
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def proxy_for() -> Iterator[Callable[[Daemon], Proxy]]:
    proxies: list[Proxy] = []

    def make(daemon: Daemon) -> Proxy:
        proxies.append(Proxy(daemon.port).start())
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


def demo_config(**replay: Any) -> dict[str, Any]:
    return {
        "replay": {"latest_value_topics": ["progress:*", "demo:*"], **replay},
        "demo": {
            "enabled": True,
            "job_step_s": 0.05,
            "counter_interval_s": 0.2,
            "notification_interval_s": 0.5,
        },
    }


def wait(driver: Driver, condition: Callable[[Driver], Any], what: str) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(
        condition, f"timed out waiting for {what}"
    )


def text(driver: Driver, css: str) -> str:
    elements = driver.find_elements(By.CSS_SELECTOR, css)
    return elements[0].text if elements else ""


def page_events(driver: Driver, type_: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = driver.execute_script(
        "return window.fanoutDemo.events.filter((e) => e.type === arguments[0])", type_
    )
    return events


def job_row(driver: Driver, task_id: str) -> str:
    return f'.job[data-task="{task_id}"]'


def bar_fraction(driver: Driver, css: str) -> float:
    """How much of its track a progress bar's fill covers, as rendered."""
    fraction: float = driver.execute_script(
        "const f = document.querySelector(arguments[0]);"
        "return f.getBoundingClientRect().width / f.parentNode.getBoundingClientRect().width",
        css,
    )
    return fraction


def start_job(driver: Driver, button: str) -> str:
    before = {e.get_attribute("data-task") for e in driver.find_elements(By.CSS_SELECTOR, ".job")}
    driver.find_element(By.ID, button).click()

    def new_task(d: Driver) -> str | None:
        rows = {e.get_attribute("data-task") for e in d.find_elements(By.CSS_SELECTOR, ".job")}
        fresh = rows - before
        return fresh.pop() if fresh else None

    task_id: str = wait(driver, new_task, "a new job row")
    return task_id


# -- tests ----------------------------------------------------------------------


def test_demo_page_renders_live_events_and_progress(
    start_daemon: Callable[..., Daemon], driver: Driver
) -> None:
    daemon = start_daemon(demo_config())
    base = f"http://{daemon.host}:{daemon.port}"
    driver.get(f"{base}/demo")
    wait(driver, lambda d: text(d, "#state") == "open", "the page to connect")

    # The live counter moves on its own (the demo publisher inside the daemon).
    first = wait(driver, lambda d: text(d, "#counter").isdigit() and text(d, "#counter"), "count")
    wait(driver, lambda d: text(d, "#counter") not in ("", first), "the counter to move")

    # An event published by an app is rendered.
    daemon.publish(
        "demo:notifications",
        {"level": "info", "title": "From the test", "body": "hello <b>browser</b>"},
        event="notification",
    )
    wait(driver, lambda d: "From the test" in text(d, "#notifications"), "the notification")
    assert "hello <b>browser</b>" in text(driver, "#notifications")  # text, not HTML

    # A job started from the page reaches 100% and shows completed.
    ok = job_row(driver, start_job(driver, "start-job"))
    wait(driver, lambda d: text(d, f"{ok} .status") == "completed", "the job to complete")
    assert text(driver, f"{ok} .percent") == "100%"
    wait(driver, lambda d: bar_fraction(d, f"{ok} .fill") == 1, "the bar to fill (it animates)")

    # A failing job shows failed with its message.
    bad_id = start_job(driver, "start-failing-job")
    bad = job_row(driver, bad_id)
    wait(driver, lambda d: text(d, f"{bad} .status") == "failed", "the job to fail")
    assert "disk quota exceeded" in text(driver, f"{bad} .message")
    assert text(driver, f"{bad} .percent") == "50%"  # it failed at step 6 of 10
    # Every progress event of both jobs arrived, in order (ids increase).
    ids = [e["id"] for e in page_events(driver, "progress")]
    assert len(ids) == len(set(ids)), ids
    wait(driver, lambda d: f"Job {bad_id} failed" in text(d, "#notifications"), "a notification")

    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "demo.png"))

    # A page opened late shows the current progress at once: the progress topic
    # keeps its latest value, sent right after `connected`.
    ok_id = ok.split('"')[1]
    driver.get(f"{base}/demo?task={ok_id}&task={bad_id}")
    wait(driver, lambda d: text(d, f"{ok} .status") == "completed", "the late page's bar")
    assert text(driver, f"{ok} .percent") == "100%"
    assert text(driver, f"{bad} .status") == "failed"
    assert "disk quota exceeded" in text(driver, f"{bad} .message")
    # Snapshots carry no id line of their own, so the last event id they report is
    # still that of `connected` (EventSource semantics): nothing was replayed.
    connected_id = page_events(driver, "connected")[-1]["id"]
    assert [e["id"] for e in page_events(driver, "progress")] == [connected_id, connected_id]


def test_page_resumes_without_loss_and_is_told_when_it_cannot(
    start_daemon: Callable[..., Daemon],
    driver: Driver,
    proxy_for: Callable[[Daemon], Proxy],
) -> None:
    # Quiet demo loops and a small ring, so the test controls what is retained.
    config = demo_config(max_events_per_topic=5)
    config["demo"] |= {"counter_interval_s": 3600.0, "notification_interval_s": 3600.0}
    daemon = start_daemon(config)
    proxy = proxy_for(daemon)
    driver.get(f"http://127.0.0.1:{proxy.port}/demo")
    wait(driver, lambda d: text(d, "#state") == "open", "the page to connect")

    def note(title: str) -> None:
        data = {"level": "info", "title": title, "body": ""}
        daemon.publish("demo:notifications", data, event="notification")

    def titles(d: Driver) -> list[str]:
        return [e["data"]["title"] for e in page_events(d, "notification")]

    def resets(d: Driver) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = d.execute_script("return window.fanoutDemo.resets")
        return found

    def cut() -> None:
        proxy.cut()
        wait(driver, lambda d: text(d, "#state") == "reconnecting", "the page to see the cut")

    note("n1")
    wait(driver, lambda d: titles(d) == ["n1"], "n1")

    # 1. Connection cut, daemon up: events published meanwhile are retained and
    #    replayed on resume (lastEventId), each once, in order, with no reset.
    cut()
    for t in ("n2", "n3", "n4"):
        note(t)
    proxy.resume()
    wait(driver, lambda d: titles(d) == ["n1", "n2", "n3", "n4"], "n2..n4 replayed")
    assert resets(driver) == []
    assert "n4" in text(driver, "#notifications")

    # 2. Cut again and publish more than the ring keeps: the id is stale now, and
    #    the page is told through onReset instead of silently missing events.
    cut()
    for i in range(8):
        note(f"m{i}")
    proxy.resume()
    wait(driver, lambda d: len(resets(d)) == 1, "a reset for the stale id")
    assert resets(driver)[0]["reason"] == "stale"
    wait(driver, lambda d: text(d, "#state") == "open", "the page to reconnect")

    # 3. Restart the daemon behind the page: the client reconnects by itself, and
    #    since ids from another run cannot be resumed, onReset says so.
    last_id = driver.execute_script("return window.fanoutDemo.client.lastEventId")
    daemon.stop()
    wait(driver, lambda d: text(d, "#state") == "reconnecting", "the page to see the restart")
    daemon.start()
    proxy.resume(daemon.port)
    wait(driver, lambda d: len(resets(d)) == 2, "a reset after the restart")
    after = resets(driver)[1]
    assert after["reason"] == "other-epoch"
    assert after["lastEventId"] == last_id
    banner = driver.find_element(By.ID, "reset")
    assert banner.is_displayed()
    assert banner.get_attribute("data-reason") == "other-epoch"
    wait(driver, lambda d: text(d, "#state") == "open", "the page to reconnect")
    note("after-restart")
    wait(driver, lambda d: titles(d)[-1:] == ["after-restart"], "a live event after the restart")


def test_fetch_mode_sends_the_token_and_resumes_with_last_event_id(
    start_daemon: Callable[..., Daemon],
    driver: Driver,
    proxy_for: Callable[[Daemon], Proxy],
) -> None:
    # The daemon ignores Authorization unless told otherwise; here it takes the
    # user from it, so the `connected` event shows what the browser really sent.
    daemon = start_daemon(
        {
            "listener": [{"tcp": "127.0.0.1:0", "trusted": True}],
            "auth": {"mode": "header", "header": "Authorization"},
        }
    )
    proxy = proxy_for(daemon)
    driver.get(f"http://127.0.0.1:{proxy.port}/fanout.js")  # any same-origin page
    driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        import("/fanout.js").then(({ connect }) => {
          const got = (window.got = []);
          const client = (window.client = connect("/events", {
            mode: "fetch", token: () => "tok-123", topics: ["t"], initialDelayMs: 100,
          }));
          client.on("connected", (d) => got.push(["connected", d]));
          client.on("update", (d, meta) => got.push(["update", d, meta.id]));
          client.onReset((info) => got.push(["reset", info]));
          done();
        });
        """
    )

    def got(d: Driver) -> list[list[Any]]:
        items: list[list[Any]] = d.execute_script("return window.got")
        return items

    def updates(d: Driver) -> list[int]:
        return [item[1]["n"] for item in got(d) if item[0] == "update"]

    wait(driver, lambda d: any(i[0] == "connected" for i in got(d)), "connected")
    assert got(driver)[0][1]["user"] == "Bearer tok-123"

    daemon.publish("t", {"n": 1}, event="update")
    wait(driver, lambda d: updates(d) == [1], "the first update")

    proxy.cut()
    wait(driver, lambda d: d.execute_script("return client.state") == "reconnecting", "the cut")
    for n in (2, 3):
        daemon.publish("t", {"n": n}, event="update")
    proxy.resume()
    # The fetch transport never puts the id in the URL: this replay came from the
    # Last-Event-ID header.
    wait(driver, lambda d: updates(d) == [1, 2, 3], "2 and 3 replayed")
    assert not [i for i in got(driver) if i[0] == "reset"]
    ids = [i[2] for i in got(driver) if i[0] == "update"]
    assert driver.execute_script("return client.lastEventId") == ids[-1]

    daemon.stop()
    daemon.start()
    proxy.resume(daemon.port)
    wait(driver, lambda d: any(i[0] == "reset" for i in got(d)), "a reset after the restart")
    reset = next(i[1] for i in got(driver) if i[0] == "reset")
    assert (reset["reason"], reset["lastEventId"]) == ("other-epoch", ids[-1])
    daemon.publish("t", {"n": 4}, event="update")
    wait(driver, lambda d: updates(d) == [1, 2, 3, 4], "a live update after the restart")
    driver.execute_script("client.close()")
