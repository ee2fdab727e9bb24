"""Topic grants, sans-IO: which topics a connection may subscribe to.

A grant is a pattern over topic names (fanout/names.py's alphabet):

- `*` matches any run of topic characters, the empty run included, across `:` and `/`
  alike (as fnmatch's `*`): `user:alice:*` matches `user:alice:` and `user:alice:a:b`;
- `{user}` stands for the connection's own user id, substituted literally: a user id
  with `*` in it matches a literal `*` (which no topic has), never "anything"; an
  anonymous connection has no user, so a pattern naming `{user}` grants it nothing,
  and a user id with characters that topics cannot have (a space, say) matches no
  topic through `{user}`;
- every other character is itself. fnmatch's `?` and `[...]` are not part of the
  syntax (they are not topic characters): a pattern with them, or with any other
  character outside the topic alphabet, is refused where it is read.

Patterns come from config (`[auth] grants`, the same for every connection), from a
token's claim, or from the trusted proxy's grants header; a connection may subscribe
to a topic when any of its patterns matches the whole topic name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

USER = "{user}"
# A pattern: topic characters, `*` and `{user}`, at most 256 characters.
_PATTERN = re.compile(r"^(?:[A-Za-z0-9_.:@/=+~*-]|\{user\})+\Z")
MAX_PATTERN_LENGTH = 256


class PatternError(ValueError):
    """A grant that is not a valid pattern; the message quotes it (shortened)."""


def check(pattern: str) -> str:
    """The pattern itself, or PatternError saying why it is not one."""
    if not pattern or len(pattern) > MAX_PATTERN_LENGTH or not _PATTERN.match(pattern):
        raise PatternError(
            f"invalid grant {pattern[:80]!r}: use topic characters, `*` and `{USER}`"
        )
    return pattern


def _segments(pattern: str, user: str | None) -> tuple[str, ...] | None:
    """The literal runs between the `*`s, with the user already in them.

    Splitting on `{user}` before `*` is what keeps a `*` in a user id literal."""
    parts = pattern.split(USER)
    if len(parts) > 1 and user is None:
        return None
    segments = [""]
    for i, part in enumerate(parts):
        if i:
            segments[-1] += user or ""
        first, *rest = part.split("*")
        segments[-1] += first
        segments.extend(rest)
    return tuple(segments)


def _match(segments: tuple[str, ...], topic: str) -> bool:
    # Topics are checked against the alphabet before this, so a `*` that matches
    # any run of the topic's characters matches only topic characters.
    if len(segments) == 1:
        return topic == segments[0]
    head, tail = segments[0], segments[-1]
    if len(topic) < len(head) + len(tail) or not topic.startswith(head):
        return False
    if not topic.endswith(tail):
        return False
    # The leftmost place for each middle run leaves the most room for the rest.
    pos, end = len(head), len(topic) - len(tail)
    for middle in segments[1:-1]:
        found = topic.find(middle, pos, end)
        if found < 0:
            return False
        pos = found + len(middle)
    return True


@dataclass(frozen=True, slots=True)
class Grants:
    """The patterns one connection holds, with `{user}` already bound."""

    patterns: tuple[str, ...]
    user: str | None
    _segments: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, patterns: Iterable[str], user: str | None) -> Grants:
        """Bind checked patterns to a user (raises PatternError on an invalid one)."""
        kept = tuple(dict.fromkeys(check(p) for p in patterns))
        bound = tuple(s for p in kept if (s := _segments(p, user)) is not None)
        return cls(kept, user, bound)

    def allows(self, topic: str) -> bool:
        return any(_match(s, topic) for s in self._segments)

    def refused(self, topics: Iterable[str]) -> list[str]:
        """The topics none of the patterns allows, sorted (for a stable message)."""
        return sorted(t for t in topics if not self.allows(t))


def split_header(value: str) -> list[str]:
    """A grants header's value: patterns separated by commas and/or spaces.

    Neither is a topic character, so the split is unambiguous."""
    return [p for p in re.split(r"[,\s]+", value) if p]
