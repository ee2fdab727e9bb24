"""The daemon's own pages on the public listener, sans-IO: a Page in, response bytes out.

`/fanout.js` (the browser client) is always served; `/demo` and `POST /demo/jobs`
only while the demo publisher is attached, `/ops` only while the ops publisher runs.
Files are read once, at start, and answered whole with `Connection: close`: these
are a few requests per page load, not the streams the daemon is built for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Protocol
from urllib.parse import parse_qs

import orjson

from .subscribe import Page


class JobStarter(Protocol):
    def start_job(self, fail: bool) -> str | None:
        """Start a demo job and return its task id, or None when too many are running."""


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _asset(name: str, content_type: str) -> Asset:
    body = resources.files("fanout").joinpath("static", name).read_bytes()
    return Asset(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')


_PHRASES = {
    200: "OK",
    202: "Accepted",
    304: "Not Modified",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
}


def http_response(
    status: int,
    body: bytes,
    content_type: str,
    headers: tuple[tuple[str, str], ...] = (),
    head_only: bool = False,
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "X-Content-Type-Options: nosniff",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)


def _json(status: int, value: object, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    return http_response(
        status,
        orjson.dumps(value) + b"\n",
        "application/json",
        (("Cache-Control", "no-store"), *headers),
    )


class Pages:
    def __init__(self) -> None:
        # Set by the demo publisher when [demo] enabled = true; /demo is 404 without it.
        self.demo: JobStarter | None = None
        # Set by the ops publisher when [ops] enabled = true; /ops is 404 without it.
        self.ops = False
        self._assets = {
            "/fanout.js": _asset("fanout.js", "application/javascript; charset=utf-8"),
            "/demo": _asset("demo.html", "text/html; charset=utf-8"),
            "/ops": _asset("ops.html", "text/html; charset=utf-8"),
        }

    def answer(self, page: Page) -> bytes:
        if page.path.startswith("/demo") and self.demo is None:
            return _json(404, {"error": "the demo is off; turn it on with [demo] enabled = true"})
        if page.path == "/ops" and not self.ops:
            return _json(404, {"error": "ops page is off; turn it on with [ops] enabled = true"})
        if page.path == "/demo/jobs":
            return self._start_job(page)
        if page.method not in ("GET", "HEAD"):
            return _json(405, {"error": f"{page.path} takes GET"}, (("Allow", "GET, HEAD"),))
        asset = self._assets[page.path]
        # no-cache: revalidate each time, so an upgraded daemon's fanout.js is seen
        # at once; the ETag makes the revalidation cheap.
        headers = (("Cache-Control", "no-cache"), ("ETag", asset.etag))
        if page.if_none_match == asset.etag:
            return http_response(304, b"", asset.content_type, headers, head_only=True)
        return http_response(
            200, asset.body, asset.content_type, headers, head_only=page.method == "HEAD"
        )

    def _start_job(self, page: Page) -> bytes:
        assert self.demo is not None
        if page.method != "POST":
            return _json(405, {"error": "/demo/jobs takes POST"}, (("Allow", "POST"),))
        # The options are in the query, so the subscriber protocol, which reads
        # request heads only, never has to read a body.
        fail = parse_qs(page.query).get("fail", ["false"])[-1].lower() in ("1", "true", "yes")
        task_id = self.demo.start_job(fail)
        if task_id is None:
            return _json(429, {"error": "too many demo jobs running"}, (("Retry-After", "5"),))
        return _json(202, {"taskId": task_id, "topic": f"progress:{task_id}"})
