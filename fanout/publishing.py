"""The control API's backend, one for every composition.

What differs between a single process, the supervisor and the backplane is only how a
list of events is emitted (assign ids and deliver here; forward to workers; append to
the shared stream): each composition passes its `emit`, and the requests map onto
routes here, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, Union

from .route import Delivery, Route, publish_route

T = TypeVar("T")
Maybe = Union[T, Awaitable[T]]  # noqa: UP007 - a generic alias needs Union here
Events = list[tuple[Route, str, bytes]]
Emit = Callable[[Events], Maybe[list[Delivery]]]


def _first(deliveries: Maybe[list[Delivery]]) -> Maybe[Delivery]:
    if not isinstance(deliveries, Awaitable):
        return deliveries[0]

    async def later(pending: Awaitable[list[Delivery]]) -> Delivery:
        return (await pending)[0]

    return later(deliveries)


class Publishing:
    def __init__(
        self,
        emit: Emit,
        holds: Callable[[str], bool | None],
        draining: Callable[[], bool],
    ) -> None:
        self._emit = emit
        # Whether a connection id is open: True, False, or None when it may be on
        # another daemon (the backplane), so the event is sent for its owner.
        self._holds = holds
        self._draining = draining

    @property
    def draining(self) -> bool:
        return self._draining()

    def publish_many(
        self, items: list[tuple[str, str, bytes, str | None]]
    ) -> Maybe[list[Delivery]]:
        """(topic, event, payload, user) each; validated before, so all go out."""
        return self._emit([(publish_route(t, u), e, p) for t, e, p, u in items])

    def broadcast(self, event: str, payload: bytes) -> Maybe[Delivery]:
        return _first(self._emit([(Route("all", ""), event, payload)]))

    def notify(self, user: str, event: str, payload: bytes) -> Maybe[Delivery]:
        return _first(self._emit([(Route("user", user), event, payload)]))

    def send(self, connection_id: str, event: str, payload: bytes) -> Maybe[Delivery | None]:
        """To one connection by the id of its `connected` event; never retained."""
        if self._holds(connection_id) is False:
            return None
        return _first(self._emit([(Route("conn", connection_id), event, payload)]))
