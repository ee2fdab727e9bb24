"""The daemon's own pages, sans-IO: request heads in, response bytes out."""

from __future__ import annotations

import h11
import orjson
import pytest

from fanout.access import Policy
from fanout.pages import Pages
from fanout.subscribe import Page, Reject, Subscribe, parse

ANON = Policy().for_listener(trusted=False)


def request(method: str, target: str, *headers: tuple[str, str]) -> h11.Request:
    return h11.Request(method=method, target=target, headers=[("Host", "x"), *headers])


def split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines)}
    return int(status_line.split()[1]), headers, body


class Jobs:
    def __init__(self, limit: int = 1) -> None:
        self.started: list[bool] = []
        self.limit = limit

    def start_job(self, fail: bool) -> str | None:
        if len(self.started) >= self.limit:
            return None
        self.started.append(fail)
        return f"job-{len(self.started)}"


@pytest.mark.parametrize(
    ("method", "target", "path", "query"),
    [
        ("GET", "/fanout.js", "/fanout.js", ""),
        ("GET", "/demo?task=a&task=b", "/demo", "task=a&task=b"),
        ("POST", "/demo/jobs?fail=true", "/demo/jobs", "fail=true"),
        ("HEAD", "/fanout.js", "/fanout.js", ""),
    ],
)
def test_page_paths_parse_to_page(method: str, target: str, path: str, query: str) -> None:
    assert parse(request(method, target), ANON, 8) == Page(method, path, query, None)


def test_other_paths_are_unchanged() -> None:
    assert isinstance(parse(request("GET", "/events?topic=a"), ANON, 8), Subscribe)
    assert parse(request("GET", "/demo.css"), ANON, 8) == Reject(
        404, "no such path: /demo.css (subscribe at /events)"
    )
    refused = parse(request("POST", "/events"), ANON, 8)
    assert isinstance(refused, Reject)
    assert refused.status == 405


def test_fanout_js_is_served_with_an_etag_and_revalidates() -> None:
    pages = Pages()
    status, headers, body = split(pages.answer(Page("GET", "/fanout.js", "", None)))
    assert status == 200
    assert headers["content-type"] == "application/javascript; charset=utf-8"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert b"export function connect" in body
    again = Page("GET", "/fanout.js", "", headers["etag"])
    assert split(pages.answer(again))[0] == 304
    status, _, body = split(pages.answer(Page("HEAD", "/fanout.js", "", None)))
    assert (status, body) == (200, b"")
    assert split(pages.answer(Page("POST", "/fanout.js", "", None)))[0] == 405


def test_demo_is_404_while_off() -> None:
    pages = Pages()
    for path, method in (("/demo", "GET"), ("/demo/jobs", "POST")):
        status, _, body = split(pages.answer(Page(method, path, "", None)))
        assert status == 404
        assert b"[demo] enabled = true" in body


def test_demo_page_and_jobs_when_on() -> None:
    pages = Pages()
    jobs = Jobs(limit=2)
    pages.demo = jobs
    status, headers, body = split(pages.answer(Page("GET", "/demo", "", None)))
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert b'from "./fanout.js"' in body
    status, _, body = split(pages.answer(Page("POST", "/demo/jobs", "fail=true", None)))
    assert status == 202
    assert orjson.loads(body) == {"taskId": "job-1", "topic": "progress:job-1"}
    assert split(pages.answer(Page("POST", "/demo/jobs", "", None)))[0] == 202
    assert jobs.started == [True, False]
    status, headers, _ = split(pages.answer(Page("POST", "/demo/jobs", "", None)))
    assert (status, headers["retry-after"]) == (429, "5")
    assert split(pages.answer(Page("GET", "/demo/jobs", "", None)))[0] == 405
