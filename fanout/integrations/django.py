"""Django: publish after the transaction commits, never for a transaction rolled back.

    from fanout.integrations.django import publish_on_commit

    with transaction.atomic():
        order = Order.objects.create(...)
        publish_on_commit("orders", {"id": order.id}, event="created")

A browser that reacts to the event by fetching the order must find it: publishing
inside the transaction would race the commit, and publish events for rollbacks.
`transaction.on_commit` runs the publish once the outermost atomic block commits
(at once when no transaction is open, as Django documents) and drops it on rollback.

The control socket is `settings.FANOUT_SOCKET` (default "./run/fanout.sock").
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction

from ..client import DEFAULT_SOCKET, Publisher, PublishError
from ..names import is_topic
from . import process_publisher

log = logging.getLogger("fanout.integrations.django")

_UNSET: Any = object()


def _body(data: Any, event: str, text: str | None) -> dict[str, Any]:
    """The publish arguments, checked and copied now, inside the transaction.

    Data that cannot be encoded raises here, where the caller can still roll back,
    not after the commit; and the JSON round trip is a snapshot, so changing `data`
    before the commit does not change what is published.
    """
    body: dict[str, Any] = {"event": event, "text": text}
    if data is not _UNSET:
        body["data"] = orjson.loads(orjson.dumps(data))
    return body


def get_publisher() -> Publisher:
    """This process's Publisher on `settings.FANOUT_SOCKET`."""
    return process_publisher(str(getattr(settings, "FANOUT_SOCKET", DEFAULT_SOCKET)))


def on_commit(
    send: Callable[[Publisher], object],
    *,
    using: str | None = None,
    publisher: Publisher | None = None,
    robust: bool = True,
) -> None:
    """Run `send(publisher)` once the current transaction on `using` commits.

    robust (the default): a publish that fails after the commit is logged, not
    raised. The data is committed either way; raising would turn a successful
    request into an error page, and the pages that missed the event catch up on
    their next reload or `reset`. robust=False raises from the commit instead.
    """

    def run() -> None:
        target = publisher if publisher is not None else get_publisher()
        try:
            send(target)
        except (PublishError, OSError, http.client.HTTPException) as exc:
            if not robust:
                raise
            log.warning("fanout: publish after commit failed: %s", exc)

    transaction.on_commit(run, using=using)


def publish_on_commit(
    topic: str,
    data: Any = _UNSET,
    *,
    event: str = "message",
    user: str | None = None,
    text: str | None = None,
    using: str | None = None,
    publisher: Publisher | None = None,
    robust: bool = True,
) -> None:
    """`Publisher.publish(...)` after the commit (see `on_commit` for `robust`)."""
    if not is_topic(topic):
        raise ValueError(f"invalid topic name: {topic!r}")
    body = _body(data, event, text)
    on_commit(
        lambda p: p.publish(topic, user=user, **body),
        using=using,
        publisher=publisher,
        robust=robust,
    )


def notify_on_commit(
    user: str,
    data: Any = _UNSET,
    *,
    event: str = "message",
    text: str | None = None,
    using: str | None = None,
    publisher: Publisher | None = None,
    robust: bool = True,
) -> None:
    """`Publisher.notify(...)` (every connection of `user`) after the commit."""
    body = _body(data, event, text)
    on_commit(lambda p: p.notify(user, **body), using=using, publisher=publisher, robust=robust)


def broadcast_on_commit(
    data: Any = _UNSET,
    *,
    event: str = "message",
    text: str | None = None,
    using: str | None = None,
    publisher: Publisher | None = None,
    robust: bool = True,
) -> None:
    """`Publisher.broadcast(...)` (every connection) after the commit."""
    body = _body(data, event, text)
    on_commit(lambda p: p.broadcast(**body), using=using, publisher=publisher, robust=robust)
