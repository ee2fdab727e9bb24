import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout import sse


def test_event_exact_bytes():
    body = sse.encode_event('{"a":1}', id="e-1", event="update")
    assert body == b'id: e-1\nevent: update\ndata: {"a":1}\n\n'


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        ("a\nb", [b"a", b"b"]),
        ("a\rb", [b"a", b"b"]),
        ("a\r\nb", [b"a", b"b"]),
        ("a\n\nb", [b"a", b"", b"b"]),
        ("trailing\n", [b"trailing", b""]),
        ("", [b""]),
    ],
)
def test_multiline_data_is_split_on_cr_lf_crlf(data, lines):
    body = sse.encode_event(data)
    assert body == b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def test_unicode_data_is_utf8():
    assert sse.encode_event("héllo ✓ 🎉") == "data: héllo ✓ 🎉\n\n".encode()


def test_bytes_data_is_split_too():
    assert sse.encode_event(b"x\r\ny") == b"data: x\ndata: y\n\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b"])
def test_newlines_in_id_or_event_are_refused(bad):
    with pytest.raises(sse.FrameError):
        sse.encode_event("x", id=bad)
    with pytest.raises(sse.FrameError):
        sse.encode_event("x", event=bad)


def test_chunk_framing_matches_http11():
    assert sse.chunk(b"hello") == b"5\r\nhello\r\n"
    assert sse.chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


def test_frame_holds_both_framings_once():
    frame = sse.Frame(b"data: 1\n\n")
    assert frame.raw == b"data: 1\n\n"
    assert frame.chunked == b"9\r\ndata: 1\n\n\r\n"
    assert frame.for_peer(True) is frame.chunked
    assert frame.for_peer(False) is frame.raw


def test_join_keeps_each_chunk_header():
    frames = [sse.Frame(b"a\n\n"), sse.Frame(b"bb\n\n")]
    assert sse.join(frames, chunked=True) == b"3\r\na\n\n\r\n4\r\nbb\n\n\r\n"
    assert sse.join(frames, chunked=False) == b"a\n\nbb\n\n"


def test_heartbeat_and_retry():
    assert sse.HEARTBEAT == b":\n\n"
    assert sse.encode_retry(2500) == b"retry: 2500\n\n"
    with pytest.raises(sse.FrameError):
        sse.encode_comment("a\nb")


def test_stream_heads():
    assert sse.STREAM_HEAD_CHUNKED.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert b"Connection: close" in sse.STREAM_HEAD_RAW
    for head in (sse.STREAM_HEAD_CHUNKED, sse.STREAM_HEAD_RAW):
        assert b"Content-Type: text/event-stream" in head
        assert b"Cache-Control: no-cache" in head
        assert b"X-Accel-Buffering: no" in head


@given(
    data=st.binary(max_size=64),
    id=st.text(max_size=12),
    event=st.text(max_size=12),
)
def test_the_one_line_fast_path_is_the_general_encoding(data, id, event):
    # The id + event + one data line shape takes a shortcut; it must be byte-exact.
    try:
        expected = sse._field("id", id) + sse._field("event", event) + sse.encode_event(data)
    except sse.FrameError:
        with pytest.raises(sse.FrameError):
            sse.encode_event(data, id=id, event=event)
        return
    assert sse.encode_event(data, id=id, event=event) == expected
