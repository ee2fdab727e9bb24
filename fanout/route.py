"""Where an event goes, and which events a subscription sees: the one rule.

Every part that must answer "does this event reach that connection?" asks here: the
hub picking a user's connections on a topic, the replay of retained events, the
backplane's backfill from the shared stream, and the registry's counts.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

Kind = Literal["topic", "user", "all", "conn"]
# A retention/delivery channel: ("topic", name), ("user", id) or ("all", "").
Key = tuple[str, str]
ALL: Key = ("all", "")


class Route(NamedTuple):
    """A topic, a user (optionally only on one topic), everyone, or one connection.
    A NamedTuple: one is built per publish, and it is the cheapest immutable record."""

    kind: Kind
    key: str  # topic name, user id, "" for all, connection id
    topic: str | None = None  # with kind "user": only that user's connections on it

    @property
    def channel(self) -> Key | None:
        """The channel it is delivered on and retained in; None for one connection
        (never retained: nobody else may replay it)."""
        if self.kind == "conn":
            return None
        return (self.kind, self.key)

    def reaches(self, topics: frozenset[str], user: str | None, conn_id: str = "") -> bool:
        kind = self.kind
        if kind == "topic":
            return self.key in topics
        if kind == "all":
            return True
        if kind == "user":
            return self.key == user and (self.topic is None or self.topic in topics)
        return self.key == conn_id


def keys_of(topics: frozenset[str], user: str | None) -> list[Key]:
    """The channels a subscription listens on: its topics, the broadcasts, its user."""
    keys: list[Key] = [("topic", t) for t in sorted(topics)]
    keys.append(ALL)
    if user is not None:
        keys.append(("user", user))
    return keys


def entry_visible(entry_topic: str | None, topics: frozenset[str]) -> bool:
    """A retained event on one of a subscription's channels: visible unless it was sent
    to the user on one topic the connection does not subscribe to (Route.reaches)."""
    return entry_topic is None or entry_topic in topics


def publish_route(topic: str, user: str | None) -> Route:
    return Route("topic", topic) if user is None else Route("user", user, topic)


class Delivery(NamedTuple):
    """A publish's answer. `sent`, in every mode: the connections of this daemon (all
    its workers) the event was addressed to when it was published. `total`: this
    daemon's open connections then (a broadcast reaches all of them)."""

    id: str
    sent: int
    total: int
