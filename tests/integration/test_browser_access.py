"""Chromium's own EventSource (not fanout.js) on a page from another origin, with a cookie token.

The page is served from one loopback port and the daemon listens on another, so
the stream is a cross-origin request: Chromium sends the token cookie only because
the page asks for `withCredentials: true` and fanout's [cors] allows that origin
with credentials. The page receives events on a topic its token grants and is
refused (403, counted and logged by the daemon) a topic it has no grant for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, wait_for
from tests.integration.test_browser import Driver, wait
from tests.integration.test_browser import driver as driver  # the module's own Chromium
from tests.jwt_keys import Signer, grants

pytestmark = pytest.mark.integration

CLIENT = Path(__file__).resolve().parents[2] / "fanout" / "static" / "fanout.js"

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>another origin</title>
<p>This page opens streams on the daemon's origin.</p>
<script>
  window.streams = {};
  window.open_ = (name, url, withCredentials) => {
    const log = (window.streams[name] = { events: [], errors: 0, state: -1 });
    const source = new EventSource(url, { withCredentials });
    source.addEventListener("connected", (e) => log.events.push(["connected", JSON.parse(e.data)]));
    source.onmessage = (e) => log.events.push(["message", JSON.parse(e.data)]);
    source.onerror = () => { log.errors += 1; log.state = source.readyState; };
    log.source = source;
  };
</script>
"""


class PageServer:
    """The other origin: one static page on its own loopback port."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                # The app's own copy of fanout.js, as a bundler would ship it.
                if self.path == "/fanout.js":
                    body, kind = CLIENT.read_bytes(), "text/javascript"
                else:
                    body, kind = PAGE, "text/html; charset=utf-8"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def page_server() -> Iterator[PageServer]:
    with PageServer() as server:
        yield server


def stream(driver: Driver, name: str) -> dict[str, Any]:
    got: dict[str, Any] = driver.execute_script(
        "const s = window.streams[arguments[0]];"
        "return {events: s.events, errors: s.errors, state: s.state};",
        name,
    )
    return got


def test_cross_origin_event_source_with_a_cookie_token(
    start_daemon: Callable[..., Daemon],
    driver: Driver,
    page_server: PageServer,
    short_tmp: Path,
) -> None:
    page_origin = f"http://127.0.0.1:{page_server.port}"
    signer = Signer.new("EdDSA")
    daemon = start_daemon(
        {
            "auth": {
                "mode": "jwt",
                "allow_anonymous": False,
                "jwt": {
                    "public_key_files": [str(signer.write(short_tmp / "ed.pem"))],
                    "cookie": "fanout_token",
                },
            },
            "cors": {"allow_origins": [page_origin], "allow_credentials": True},
        }
    )
    events = f"http://127.0.0.1:{daemon.port}/events"
    driver.get(f"{page_origin}/")
    # A cookie for host 127.0.0.1: cookies are per host, not per port, so the
    # browser may send it to the daemon's origin, but on a cross-origin request
    # only with credentials.
    token = signer.token(grants("orders", "user:{user}:*"), sub="carol")
    driver.add_cookie({"name": "fanout_token", "value": token, "path": "/"})

    driver.execute_script(
        "open_('granted', arguments[0], true);", f"{events}?topic=orders&topic=user:carol:inbox"
    )
    wait(
        driver,
        lambda d: [e for e in stream(d, "granted")["events"] if e[0] == "connected"],
        "the cross-origin stream to connect",
    )
    connected = stream(driver, "granted")["events"][0][1]
    assert connected["user"] == "carol"
    daemon.publish("orders", {"n": 1})
    daemon.publish("user:carol:inbox", {"n": 2})
    wait(
        driver,
        lambda d: (
            [e[1]["n"] for e in stream(d, "granted")["events"] if e[0] == "message"] == [1, 2]
        ),
        "both events in the page",
    )

    # A topic the token does not grant: refused with 403 by the daemon, and
    # EventSource gives up on a non-200 answer (readyState CLOSED).
    driver.execute_script("open_('refused', arguments[0], true);", f"{events}?topic=payroll")
    wait(driver, lambda d: stream(d, "refused")["state"] == 2, "the refused stream to close")
    assert stream(driver, "refused")["events"] == []
    wait_for(lambda: daemon.stats()["refused"].get("403") == 1, what="the 403 in the stats")
    assert "403 not allowed to subscribe to: payroll" in daemon.log

    # Without withCredentials the browser does not send the cookie cross-origin:
    # the daemon sees no token (401), so the credentials really came from the cookie.
    driver.execute_script("open_('anonymous', arguments[0], false);", f"{events}?topic=orders")
    wait(driver, lambda d: stream(d, "anonymous")["state"] == 2, "the anonymous stream to close")
    wait_for(lambda: daemon.stats()["refused"].get("401") == 1, what="the 401 in the stats")

    # The granted stream is still live after all that.
    daemon.publish("orders", {"n": 3})
    wait(
        driver,
        lambda d: (
            [e[1]["n"] for e in stream(d, "granted")["events"] if e[0] == "message"] == [1, 2, 3]
        ),
        "a live event after the refusals",
    )
    driver.execute_script("for (const s of Object.values(window.streams)) s.source.close();")


def test_cross_origin_fetch_mode_with_a_bearer_token_passes_the_preflight(
    start_daemon: Callable[..., Daemon],
    driver: Driver,
    page_server: PageServer,
    short_tmp: Path,
) -> None:
    # Authorization is not a CORS-safelisted header: Chromium sends an OPTIONS
    # preflight first, and streams only if the daemon's answer allows it.
    page_origin = f"http://127.0.0.1:{page_server.port}"
    signer = Signer.new("RS256")
    daemon = start_daemon(
        {
            "auth": {
                "mode": "jwt",
                "allow_anonymous": False,
                "jwt": {"public_key_files": [str(signer.write(short_tmp / "rs.pem"))]},
            },
            "cors": {"allow_origins": [page_origin]},
        }
    )
    driver.get(f"{page_origin}/")
    driver.execute_async_script(
        """
        const [url, token, done] = arguments;
        import("/fanout.js").then(({ connect }) => {
          const got = (window.got = []);
          window.client = connect(url, {
            mode: "fetch", token: () => token, topics: ["orders"], initialDelayMs: 100,
          });
          client.on("connected", (d) => got.push(["connected", d.user]));
          client.on("message", (d) => got.push(["message", d]));
          done();
        });
        """,
        f"http://127.0.0.1:{daemon.port}/events",
        signer.token(grants("orders"), sub="dana"),
    )

    def got(d: Driver) -> list[list[Any]]:
        items: list[list[Any]] = d.execute_script("return window.got")
        return items

    wait(driver, lambda d: ["connected", "dana"] in got(d), "the fetch stream to connect")
    daemon.publish("orders", {"n": 1})
    wait(driver, lambda d: ["message", {"n": 1}] in got(d), "the event")
    driver.execute_script("client.close()")
