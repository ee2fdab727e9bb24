"""Publish requests, sans-IO: request bodies in, validated publications out.

A batch is decoded and validated whole before the caller publishes anything, so a
bad line rejects the request and nothing of it reaches a subscriber.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from .names import EVENT_PATTERN, TOPIC_PATTERN, USER_PATTERN

Topic = Annotated[str, Meta(pattern=TOPIC_PATTERN)]
EventName = Annotated[str, Meta(pattern=EVENT_PATTERN)]
User = Annotated[str, Meta(pattern=USER_PATTERN)]

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


def _payload(body: EventBody) -> bytes:
    if body.text is not UNSET:
        if body.data is not UNSET:
            raise BadRequest("give either `data` (JSON) or `text`, not both")
        return body.text.encode()
    if body.data is UNSET:
        raise BadRequest("missing `data` (any JSON value) or `text` (a string)")
    return _encoder.encode(body.data)


def _decode_one(raw: bytes, with_topic: bool) -> Publication:
    try:
        if with_topic:
            body: EventBody = _publish_decoder.decode(raw)
        else:
            body = _event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    except RecursionError:
        # msgspec stops at the interpreter's recursion limit; that is bad input, not
        # a fault of ours (it used to answer 500 with a traceback in the log).
        raise BadRequest(f"invalid JSON: nested deeper than {_MAX_DEPTH_HINT} levels") from None
    payload = _payload(body)
    if isinstance(body, PublishBody):
        user = None if body.user is UNSET else body.user
        return Publication(body.event, payload, body.topic, user)
    return Publication(body.event, payload)


def decode_event(raw: bytes, content_type: str) -> Publication:
    """The body of /broadcast, /notify/{user}, /send/{connection}: one event, no topic."""
    if media_type(content_type) not in JSON_TYPES:
        raise BadRequest(f"unsupported Content-Type {content_type!r}: use application/json", 415)
    return _decode_one(raw, with_topic=False)


Item = tuple[str, str, bytes, str | None]  # (topic, event, payload, user): Backend.publish_many


def decode_publish_items(raw: bytes, content_type: str) -> tuple[list[Item], bool]:
    """The body of /publish as the backend's items, and whether it was a batch."""
    publications = decode_publish(raw, content_type)
    batch = media_type(content_type) in NDJSON_TYPES
    return [(p.topic, p.event, p.payload, p.user) for p in publications], batch


def decode_publish(raw: bytes, content_type: str) -> list[Publication]:
    """The body of /publish: one JSON object, or NDJSON with one object per line."""
    kind = media_type(content_type)
    if kind in JSON_TYPES:
        return [_decode_one(raw, with_topic=True)]
    if kind not in NDJSON_TYPES:
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
            out.append(_decode_one(line, with_topic=True))
        except BadRequest as exc:
            raise BadRequest(f"line {number}: {exc}", exc.status) from None
    if not out:
        raise BadRequest("empty batch: no event in the body")
    return out
