import h11
import pytest

from fanout.access import Policy
from fanout.subscribe import Reject, Subscribe, parse, response

ANON = Policy().for_listener(trusted=False)
TRUSTED = Policy(mode="header", allow_anonymous=False).for_listener(trusted=True)
UNTRUSTED = Policy(mode="header").for_listener(trusted=False)


def read(raw: bytes) -> h11.Request:
    """Feed the request one byte at a time, as h11's own tests do."""
    conn = h11.Connection(h11.SERVER)
    for i in range(len(raw)):
        conn.receive_data(raw[i : i + 1])
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            assert isinstance(event, h11.Request)
            return event
    raise AssertionError("incomplete request")


def req(target: str, *headers: str, version: str = "1.1", method: str = "GET") -> h11.Request:
    lines = [f"{method} {target} HTTP/{version}", "Host: x", *headers]
    return read(("\r\n".join(lines) + "\r\n\r\n").encode())


def test_topics_and_framing():
    got = parse(req("/events?topic=a&topic=b&topic=a"), ANON, 8)
    assert got == Subscribe(frozenset({"a", "b"}), None, None, True)
    assert parse(req("/events?topic=a", version="1.0"), ANON, 8).chunked is False


def test_last_event_id_header_wins_over_query():
    got = parse(req("/events?topic=a&lastEventId=q-1", "Last-Event-ID: h-2"), ANON, 8)
    assert got.last_event_id == "h-2"
    assert parse(req("/events?lastEventId=q-1"), ANON, 8).last_event_id == "q-1"


def test_percent_encoded_topic():
    assert parse(req("/events?topic=progress%3Ajob-1"), ANON, 8).topics == {"progress:job-1"}


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (req("/nope"), 404),
        (req("/events", method="POST"), 405),
        (req("/events?topic=a%20b"), 400),
        (req("/events?topic="), 400),
        (req("/events?" + "&".join(f"topic=t{i}" for i in range(9))), 400),
    ],
)
def test_refusals(request_, status):
    got = parse(request_, ANON, 8)
    assert isinstance(got, Reject)
    assert got.status == status
    assert got.reason


def test_identity_header_on_trusted_listener():
    assert parse(req("/events", "X-Fanout-User: alice"), TRUSTED, 8).user == "alice"
    assert parse(req("/events"), TRUSTED, 8) == Reject(401, "authentication required")


def test_identity_header_refused_on_untrusted_listener():
    got = parse(req("/events", "X-Fanout-User: alice"), UNTRUSTED, 8)
    assert isinstance(got, Reject)
    assert got.status == 403
    assert parse(req("/events"), UNTRUSTED, 8).user is None


def test_response_is_complete_and_closes():
    raw = response(429, "too many", (("Retry-After", "5"),))
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 Too Many Requests")
    assert b"Retry-After: 5" in head
    assert b"Connection: close" in head
    assert body == b"too many\n"
    assert f"Content-Length: {len(body)}".encode() in head
