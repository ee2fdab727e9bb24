"""The ops page's pieces, sans-IO: routing, the switch, its settings."""

from __future__ import annotations

import h11
import pytest

from fanout.access import Policy
from fanout.config import Ops, from_mapping
from fanout.ops import OPS_EVENT, OPS_TOPIC
from fanout.pages import Pages
from fanout.subscribe import Page, parse

ANON = Policy().for_listener(trusted=False)


def answer(pages: Pages, method: str = "GET") -> tuple[int, bytes, bytes]:
    raw = pages.answer(Page(method, "/ops", "", None))
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


def test_ops_is_a_page_path() -> None:
    request = h11.Request(method="GET", target="/ops", headers=[("Host", "x")])
    assert parse(request, ANON, 8) == Page("GET", "/ops", "", None)


def test_ops_is_404_while_off() -> None:
    status, _, body = answer(Pages())
    assert status == 404
    assert b"[ops] enabled = true" in body


def test_ops_page_follows_the_topic_the_publisher_feeds() -> None:
    pages = Pages()
    pages.ops = True
    status, head, body = answer(pages)
    assert status == 200
    assert b"Content-Type: text/html; charset=utf-8" in head
    # The page and the publisher agree on the topic and the event type.
    assert f'topics: ["{OPS_TOPIC}"]'.encode() in body
    assert f'client.on("{OPS_EVENT}"'.encode() in body
    assert b'from "./fanout.js"' in body
    assert answer(pages, "POST")[0] == 405


def test_ops_settings() -> None:
    assert from_mapping({}).ops == Ops(enabled=False, interval_s=1.0)
    assert from_mapping({"ops": {"enabled": True, "interval_s": 0.5}}).ops.interval_s == 0.5
    with pytest.raises(ValueError, match=r"ops\.interval_s"):
        from_mapping({"ops": {"interval_s": 0.001}})
    with pytest.raises(ValueError, match=r"unknown field `path` - at `\$\.ops`"):
        from_mapping({"ops": {"path": "/x"}})
