"""The clients' sans-IO answer reader: bytes in, (status, body, closes) out."""

from __future__ import annotations

import pytest

from fanout.client import Answers, PublishError, _result, request

ONE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 22\r\n\r\n"
    b'{"id":"e-1","sent":0}\n'
)
CLOSE = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


def test_whole_answers_and_pipelined_ones():
    assert Answers().feed(ONE) == [(200, b'{"id":"e-1","sent":0}\n', False)]
    assert Answers().feed(ONE + CLOSE + ONE) == [
        (200, b'{"id":"e-1","sent":0}\n', False),
        (400, b"{}", True),
        (200, b'{"id":"e-1","sent":0}\n', False),
    ]


def test_one_byte_at_a_time_gives_the_same():
    reader = Answers()
    got = []
    for i in range(len(ONE + CLOSE)):
        got += reader.feed((ONE + CLOSE)[i : i + 1])
    assert got == Answers().feed(ONE + CLOSE)


def test_interim_100_is_skipped_and_header_case_is_ignored():
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}"
    assert Answers().feed(data) == [(201, b"{}", False)]


@pytest.mark.parametrize(
    "bad",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 2xx OK\r\n\r\n",
    ],
)
def test_what_fanout_never_sends_is_a_protocol_error(bad):
    with pytest.raises(Answers.ProtocolError):
        Answers().feed(bad)


def test_request_bytes():
    assert request(b"GET", b"/stats") == b"GET /stats HTTP/1.1\r\nHost: fanout\r\n\r\n"
    assert request(b"POST", b"/publish", b"{}") == (
        b"POST /publish HTTP/1.1\r\nHost: fanout\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )


def test_error_answers_raise_with_the_daemons_message():
    with pytest.raises(PublishError) as info:
        _result(400, b'{"error":"invalid JSON"}\n')
    assert (info.value.status, info.value.message) == (400, "invalid JSON")
