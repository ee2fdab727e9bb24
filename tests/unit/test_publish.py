import pytest

from fanout.publish import BadRequest, decode_event, decode_publish

JSON = "application/json"
NDJSON = "application/x-ndjson"


def test_one_event():
    [p] = decode_publish(b'{"topic": "t", "event": "e", "data": {"a": [1, 2]}}', JSON)
    assert (p.topic, p.event, p.payload, p.user) == ("t", "e", b'{"a":[1,2]}', None)


def test_defaults_and_user_and_text():
    [p] = decode_publish(b'{"topic": "t", "text": "a\\nb", "user": "u1"}', JSON)
    assert (p.event, p.payload, p.user) == ("message", b"a\nb", "u1")


def test_curl_default_content_type_is_json():
    assert decode_publish(b'{"topic": "t", "data": 1}', "application/x-www-form-urlencoded")


def test_null_data_is_data():
    [p] = decode_publish(b'{"topic": "t", "data": null}', JSON)
    assert p.payload == b"null"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{", "invalid JSON"),
        (b"[]", "Expected `object`"),
        (b'{"data": 1}', "missing required field `topic`"),
        (b'{"topic": 5, "data": 1}', "$.topic"),
        (b'{"topic": "a b", "data": 1}', "$.topic"),
        (b'{"topic": "t"}', "missing `data`"),
        (b'{"topic": "t", "data": 1, "text": "x"}', "not both"),
        (b'{"topic": "t", "data": 1, "evnt": "x"}', "evnt"),
        (b'{"topic": "t", "data": 1, "event": "a\\nb"}', "$.event"),
        (b'{"topic": "t\\n", "data": 1}', "$.topic"),
    ],
)
def test_bad_bodies_say_what_is_wrong(body, needle):
    with pytest.raises(BadRequest) as info:
        decode_publish(body, JSON)
    assert info.value.status == 400
    assert needle in str(info.value)


def test_unsupported_content_type_is_415():
    with pytest.raises(BadRequest) as info:
        decode_publish(b"{}", "text/html")
    assert info.value.status == 415


BATCH = b'{"topic": "a", "data": 1}\n{"topic": "b", "data": 2}\n\n{"topic": "c", "text": "x"}\n'


def test_ndjson_batch():
    assert [p.topic for p in decode_publish(BATCH, NDJSON)] == ["a", "b", "c"]


def test_ndjson_bad_line_rejects_whole_batch_and_names_line():
    body = b'{"topic": "a", "data": 1}\n{"topic": 2, "data": 2}\n'
    with pytest.raises(BadRequest, match="line 2"):
        decode_publish(body, NDJSON)


def test_ndjson_empty_batch():
    with pytest.raises(BadRequest, match="empty"):
        decode_publish(b"\n\n", NDJSON)


@pytest.mark.parametrize("cut", range(1, len(BATCH)))
def test_ndjson_truncated_anywhere_is_all_or_nothing(cut):
    # h11-style: every prefix either decodes to whole events or is refused.
    body = BATCH[:cut]
    try:
        out = decode_publish(body, NDJSON)
    except BadRequest:
        return
    assert len(out) <= 3
    assert body.rstrip(b"\n").count(b"\n") + 1 >= len(out)


def test_event_body_has_no_topic():
    p = decode_event(b'{"event": "hello", "data": [1]}', JSON)
    assert (p.event, p.payload) == ("hello", b"[1]")
    with pytest.raises(BadRequest, match="topic"):
        decode_event(b'{"topic": "t", "data": 1}', JSON)
