"""Publish requests, sans-IO: request bodies in, validated publications out.

A batch is decoded and validated whole before the caller publishes anything, so a
bad line rejects the request and nothing of it reaches a subscriber.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from .names import EVENT_PATTERN, TOPIC_PATTERN, USER_PATTERN

# Names are checked against their patterns after decoding, through a memo of names
# already seen valid (see _Names): msgspec's `Meta(pattern=...)` runs the regex on
# every request, about 0.5 µs a field, a quarter of a publish's validation.
Topic = Annotated[str, Meta(max_length=128)]
EventName = Annotated[str, Meta(max_length=64)]
User = Annotated[str, Meta(max_length=256)]

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/ndjson"})
# curl -d sends form-urlencoded unless told otherwise; the body is still JSON, and
# refusing it would break the first command every user types.
JSON_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded", ""})


class BadRequest(ValueError):
    """A request that publishes nothing; `status` is the HTTP answer (400, 413, 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class EventBody(Struct, forbid_unknown_fields=True):
    # `data` is any JSON value, sent as compact JSON; `text` is sent as it is, one
    # `data:` line per line (for plain-text streams such as model output).
    event: EventName = "message"
    data: Any = UNSET
    text: str | UnsetType = UNSET


class PublishBody(EventBody, forbid_unknown_fields=True, kw_only=True):
    topic: Topic
    user: User | UnsetType = UNSET


class Publication(Struct, frozen=True):
    event: str
    payload: bytes
    topic: str = ""
    user: str | None = None


# What a client may nest to, roughly: msgspec stops at the interpreter's recursion
# limit, whatever the stack already holds; said in the error so a user knows the scale.
_MAX_DEPTH_HINT = 900

_event_decoder = msgspec.json.Decoder(EventBody)
_publish_decoder = msgspec.json.Decoder(PublishBody)
_encoder = msgspec.json.Encoder()


def media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


_OTHER, _JSON, _NDJSON = 0, 1, 2
# Content-Type header values seen, and what they mean: a publisher sends the same one
# every time, so this is one dict lookup per request. Bounded: a client that varies
# it only misses the memo.
_kinds: dict[str, int] = {}


def _kind(content_type: str) -> int:
    kind = _kinds.get(content_type)
    if kind is None:
        media = media_type(content_type)
        kind = _JSON if media in JSON_TYPES else _NDJSON if media in NDJSON_TYPES else _OTHER
        if len(_kinds) < 64:
            _kinds[content_type] = kind
    return kind


def _payload(body: EventBody) -> bytes:
    if body.text is not UNSET:
        if body.data is not UNSET:
            raise BadRequest("give either `data` (JSON) or `text`, not both")
        return body.text.encode()
    if body.data is UNSET:
        raise BadRequest("missing `data` (any JSON value) or `text` (a string)")
    return _encoder.encode(body.data)


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    except RecursionError:
        # msgspec stops at the interpreter's recursion limit; that is bad input, not
        # a fault of ours (it used to answer 500 with a traceback in the log).
        raise BadRequest(f"invalid JSON: nested deeper than {_MAX_DEPTH_HINT} levels") from None


Item = tuple[str, str, bytes, str | None]  # (topic, event, payload, user): Backend.publish_many


class _Names:
    """Valid names seen lately: publishers reuse a few topics and event names, so the
    regex runs once per name, not once per request. Bounded; cleared when full."""

    def __init__(self, pattern: str, field: str, size: int = 4096) -> None:
        self._match = re.compile(pattern).match
        self._seen: set[str] = set()
        self._size = size
        # msgspec's own wording, which the API has always answered with.
        self._error = f"Expected `str` matching regex {pattern!r} - at `$.{field}`"

    def check(self, name: str) -> None:
        if name in self._seen:
            return
        if self._match(name) is None:
            raise BadRequest(self._error)
        if len(self._seen) >= self._size:
            self._seen.clear()
        self._seen.add(name)


_topics = _Names(TOPIC_PATTERN, "topic")
_events = _Names(EVENT_PATTERN, "event")
_users = _Names(USER_PATTERN, "user")


def _item(raw: bytes) -> Item:
    body: PublishBody = _decode(_publish_decoder, raw)
    _topics.check(body.topic)
    _events.check(body.event)
    user = body.user
    if user is UNSET:
        return (body.topic, body.event, _payload(body), None)
    _users.check(user)
    return (body.topic, body.event, _payload(body), user)


def decode_event(raw: bytes, content_type: str) -> Publication:
    """The body of /broadcast, /notify/{user}, /send/{connection}: one event, no topic."""
    if _kind(content_type) != _JSON:
        raise BadRequest(f"unsupported Content-Type {content_type!r}: use application/json", 415)
    body: EventBody = _decode(_event_decoder, raw)
    _events.check(body.event)
    return Publication(body.event, _payload(body))


def decode_publish_items(raw: bytes, content_type: str) -> tuple[list[Item], bool]:
    """The body of /publish as the backend's items, and whether it was a batch (NDJSON):
    one JSON object, or one object per line. The whole body is validated first."""
    kind = _kind(content_type)
    if kind == _JSON:
        return [_item(raw)], False
    if kind != _NDJSON:
        raise BadRequest(
            f"unsupported Content-Type {content_type!r}: "
            "use application/json or application/x-ndjson",
            415,
        )
    out = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            out.append(_item(line))
        except BadRequest as exc:
            raise BadRequest(f"line {number}: {exc}", exc.status) from None
    if not out:
        raise BadRequest("empty batch: no event in the body")
    return out, True


def decode_publish(raw: bytes, content_type: str) -> list[Publication]:
    """The body of /publish as Publications (decode_publish_items, as values)."""
    items, _ = decode_publish_items(raw, content_type)
    return [Publication(event, payload, topic, user) for topic, event, payload, user in items]
