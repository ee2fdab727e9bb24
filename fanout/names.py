"""What a topic, an event name and a user id may look like (shared by both sides)."""

from __future__ import annotations

import re

# Letters, digits and a few separators people use for namespacing: "orders",
# "progress:job-42", "team/7.dashboard", "user@example.com". No spaces, no commas,
# nothing that needs escaping in a URL query beyond what browsers already do.
TOPIC_PATTERN = r"^[A-Za-z0-9_.:@/=+~-]{1,128}\Z"
# An event name becomes an `event:` field: no line breaks, short.
EVENT_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}\Z"
# User ids come from an auth system: allow anything printable.
USER_PATTERN = r"^[^\x00-\x1f\x7f]{1,256}\Z"

_TOPIC = re.compile(TOPIC_PATTERN)
_USER = re.compile(USER_PATTERN)


def is_topic(name: str) -> bool:
    return _TOPIC.match(name) is not None


def is_user(name: str) -> bool:
    return _USER.match(name) is not None
