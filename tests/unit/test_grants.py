"""Grant patterns: `*` within the topic alphabet, `{user}` substituted literally."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.grants import Grants, PatternError, check, split_header
from fanout.names import is_topic

TOPIC_CHARS = "abcAB09_.:@/=+~-"


@pytest.mark.parametrize(
    ("pattern", "user", "topic", "allowed"),
    [
        ("orders", None, "orders", True),
        ("orders", None, "orders2", False),
        ("orders*", None, "orders", True),  # `*` may match nothing
        ("*", None, "any/thing:at-all", True),
        ("user:{user}:*", "alice", "user:alice:inbox", True),
        ("user:{user}:*", "alice", "user:alice:a:b", True),  # across separators
        ("user:{user}:*", "alice", "user:alice", False),
        ("user:{user}:*", "alice", "user:bob:inbox", False),
        ("user:{user}:*", "alice", "user:alicex:inbox", False),
        ("user:{user}:*", None, "user::inbox", False),  # anonymous: never
        ("{user}", "bob", "bob", True),
        ("{user}/{user}", "bob", "bob/bob", True),
        ("{user}/{user}", "bob", "bob/eve", False),
        ("a*b*c", None, "abc", True),
        ("a*b*c", None, "a-x-b-y-c", True),
        ("a*b*c", None, "acb", False),
        ("a*a", None, "a", False),  # head and tail cannot share a character
        ("a*a", None, "aa", True),
        ("progress:*", None, "progress:job-1", True),
    ],
)
def test_matching(pattern: str, user: str | None, topic: str, allowed: bool) -> None:
    assert Grants.of([pattern], user).allows(topic) is allowed


def test_a_user_id_is_never_a_pattern() -> None:
    # A user called "*" must not be granted user:<anyone>:*.
    grants = Grants.of(["user:{user}:*"], "*")
    assert not grants.allows("user:bob:inbox")
    assert grants.allows("user:*:inbox")  # only the literal (not a valid topic anyway)
    assert not Grants.of(["t:{user}"], "a*").allows("t:abc")


@pytest.mark.parametrize(
    "pattern", ["", "a b", "a,b", "t?", "t[ab]", "{users}", "{user", "é", "x" * 257]
)
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(PatternError, match="invalid grant"):
        check(pattern)
    with pytest.raises(PatternError):
        Grants.of(["ok", pattern], "alice")


def test_refused_lists_what_no_pattern_allows_sorted() -> None:
    grants = Grants.of(["orders", "user:{user}:*"], "alice")
    assert grants.refused({"z", "orders", "user:alice:x", "a"}) == ["a", "z"]
    assert Grants.of([], "alice").refused({"t"}) == ["t"]


def test_split_header() -> None:
    assert split_header(" orders, user:{user}:*  news ,,") == ["orders", "user:{user}:*", "news"]
    assert split_header("") == []


@given(
    st.text(alphabet=TOPIC_CHARS + "*", min_size=1, max_size=12),
    st.text(alphabet=TOPIC_CHARS, min_size=1, max_size=12),
)
def test_same_as_fnmatch_for_star_only_patterns(pattern: str, topic: str) -> None:
    # fnmatchcase, with only `*` special in these alphabets, is the reference.
    assert is_topic(topic)
    assert Grants.of([pattern], None).allows(topic) is fnmatch.fnmatchcase(topic, pattern)
