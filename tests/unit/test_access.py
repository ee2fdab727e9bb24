"""Who may read what, through subscribe.parse: request heads in, Subscribe or Reject out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout import config
from fanout.access import Access, Policy
from fanout.subscribe import Answer, Reject, Subscribe, parse, response, stream_head
from tests.jwt_keys import Signer, grants

APP = "http://127.0.0.1:5000"


def request(target: str, *headers: tuple[str, str], method: str = "GET") -> h11.Request:
    return h11.Request(method=method, target=target, headers=[("Host", "x"), *headers])


def policy(tmp_path: Path, **auth: Any) -> tuple[Policy, Signer]:
    signer = Signer.new("ES256")
    key = signer.write(tmp_path / "es256.pem")
    jwt = {"public_key_files": [str(key)], **auth.pop("jwt", {})}
    cors = auth.pop("cors", {})
    cfg = config.from_mapping({"auth": {"mode": "jwt", "jwt": jwt, **auth}, "cors": cors})
    return Policy.from_config(cfg), signer


def subscribe(access: Access, target: str, *headers: tuple[str, str]) -> Subscribe:
    got = parse(request(target, *headers), access, 32)
    assert isinstance(got, Subscribe), got
    return got


def reject(access: Access, target: str, *headers: tuple[str, str]) -> Reject:
    got = parse(request(target, *headers), access, 32)
    assert isinstance(got, Reject), got
    return got


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


# -- modes without tokens ------------------------------------------------------


def test_default_keeps_every_topic_public() -> None:
    access = Policy.from_config(config.Config()).for_listener(trusted=False)
    got = subscribe(access, "/events?topic=anything&topic=progress:job-1")
    assert got.user is None
    assert got.topics == {"anything", "progress:job-1"}


def test_config_grants_restrict_anonymous_connections() -> None:
    cfg = config.from_mapping({"auth": {"grants": ["news", "public:*"]}})
    access = Policy.from_config(cfg).for_listener(trusted=False)
    assert subscribe(access, "/events?topic=news&topic=public:a").topics == {"news", "public:a"}
    got = reject(access, "/events?topic=news&topic=secret&topic=orders")
    assert got.status == 403
    assert got.reason == "not allowed to subscribe to: orders, secret"


def test_header_mode_user_and_grants_header() -> None:
    cfg = config.from_mapping(
        {
            "listener": [{"tcp": "127.0.0.1:0", "trusted": True}],
            "auth": {
                "mode": "header",
                "grants_header": "X-Fanout-Grants",
                "grants": ["news"],
                "allow_anonymous": False,
            },
        }
    )
    access = Policy.from_config(cfg).for_listener(trusted=True)
    user = ("X-Fanout-User", "alice")
    both = (user, ("X-Fanout-Grants", "orders, user:{user}:*"))
    got = subscribe(access, "/events?topic=news&topic=orders&topic=user:alice:inbox", *both)
    assert got.user == "alice"
    assert got.grants.patterns == ("news", "orders", "user:{user}:*")
    assert reject(access, "/events?topic=user:bob:inbox", *both).status == 403
    # Without the grants header, only config grants.
    assert reject(access, "/events?topic=orders", user).reason == (
        "not allowed to subscribe to: orders"
    )
    assert subscribe(access, "/events?topic=news", user).user == "alice"
    bad = reject(access, "/events?topic=news", user, ("X-Fanout-Grants", "t?"))
    assert bad.status == 400
    assert "X-Fanout-Grants" in bad.reason


def test_identity_or_grants_header_sent_twice_is_refused() -> None:
    access = Policy(mode="header", grants_header=b"x-fanout-grants").for_listener(trusted=True)
    twice = reject(access, "/events", ("X-Fanout-User", "alice"), ("X-Fanout-User", "eve"))
    assert twice.status == 400
    assert "more than once" in twice.reason
    # Even when both values agree: the proxy appends, it does not replace.
    same = reject(access, "/events", ("X-Fanout-User", "alice"), ("x-fanout-user", "alice"))
    assert same.status == 400
    grants2 = reject(
        access,
        "/events",
        ("X-Fanout-User", "alice"),
        ("X-Fanout-Grants", "a"),
        ("X-Fanout-Grants", "b"),
    )
    assert grants2.status == 400


def test_grants_header_is_refused_on_an_untrusted_listener() -> None:
    access = Policy(mode="header", grants_header=b"x-fanout-grants").for_listener(trusted=False)
    got = reject(access, "/events?topic=t", ("X-Fanout-Grants", "*"))
    assert got.status == 403
    assert "trusted listener" in got.reason


def test_token_query_parameter_outside_jwt_mode() -> None:
    access = Policy().for_listener(trusted=False)
    assert reject(access, "/events?topic=t&token=x").status == 400


# -- mode "jwt" ----------------------------------------------------------------


def test_bearer_token_grants_and_carries_user_exp_info(tmp_path: Path) -> None:
    access_policy, signer = policy(tmp_path)
    access = access_policy.for_listener(trusted=False)
    exp = int(time.time()) + 60
    token = signer.token(grants("orders", "user:{user}:*", name="Alice"), exp=exp)
    got = subscribe(access, "/events?topic=orders&topic=user:alice:inbox", bearer(token))
    assert got.user == "alice"
    assert got.exp == exp
    assert got.info == {"name": "Alice"}
    assert got.grants.allows("user:alice:other")
    assert not got.grants.allows("user:bob:inbox")


def test_token_for_other_topics_is_403_naming_them(tmp_path: Path) -> None:
    access_policy, signer = policy(tmp_path)
    access = access_policy.for_listener(trusted=False)
    token = signer.token(grants("user:{user}:*"))
    got = reject(access, "/events?topic=user:alice:a&topic=user:bob:a&topic=orders", bearer(token))
    assert got.status == 403
    assert got.reason == "not allowed to subscribe to: orders, user:bob:a"
    assert dict(got.headers)["WWW-Authenticate"].startswith(
        'Bearer realm="fanout", error="insufficient_scope"'
    )


def test_config_grants_add_to_token_grants_with_the_token_user(tmp_path: Path) -> None:
    access_policy, signer = policy(tmp_path, grants=["news", "user:{user}:*"])
    access = access_policy.for_listener(trusted=False)
    token = signer.token(grants("orders"), sub="bob")
    got = subscribe(access, "/events?topic=news&topic=orders&topic=user:bob:x", bearer(token))
    assert got.user == "bob"
    assert reject(access, "/events?topic=user:alice:x", bearer(token)).status == 403


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: s.token(aud="fanout", iss="https://app", exp=1), "token expired"),
        (lambda s: Signer.new("ES256").token(aud="fanout", iss="https://app"), "bad signature"),
        (lambda s: s.token(aud="someone-else", iss="https://app"), "wrong audience"),
        (lambda s: s.token(aud="fanout", iss="https://evil"), "wrong issuer"),
        (lambda s: "not-a-token", "malformed token"),
        (lambda s: Signer.new("HS256").token(), "algorithm not accepted"),
    ],
)
def test_bad_tokens_are_401_with_a_bearer_challenge(tmp_path: Path, make: Any, reason: str) -> None:
    access_policy, signer = policy(tmp_path, jwt={"audience": "fanout", "issuer": "https://app"})
    access = access_policy.for_listener(trusted=False)
    got = reject(access, "/events?topic=t", bearer(make(signer)))
    assert got.status == 401
    assert got.reason == f"invalid token: {reason}"
    challenge = dict(got.headers)["WWW-Authenticate"]
    assert challenge == (
        f'Bearer realm="fanout", error="invalid_token", error_description="{reason}"'
    )


def test_good_token_with_audience_and_issuer(tmp_path: Path) -> None:
    access_policy, signer = policy(tmp_path, jwt={"audience": "fanout", "issuer": "https://app"})
    access = access_policy.for_listener(trusted=False)
    token = signer.token(grants("t"), aud="fanout", iss="https://app")
    assert subscribe(access, "/events?topic=t", bearer(token)).user == "alice"


def test_no_token(tmp_path: Path) -> None:
    closed = policy(tmp_path, allow_anonymous=False)[0].for_listener(trusted=False)
    got = reject(closed, "/events?topic=t")
    assert (got.status, got.reason) == (401, "authentication required")
    assert dict(got.headers)["WWW-Authenticate"] == 'Bearer realm="fanout"'
    # Anonymous allowed: only the config grants, which default to none in jwt mode.
    open_ = policy(tmp_path, grants=["news"])[0].for_listener(trusted=False)
    assert subscribe(open_, "/events?topic=news").user is None
    assert reject(open_, "/events?topic=orders").status == 403
    assert reject(policy(tmp_path)[0].for_listener(trusted=False), "/events?topic=t").status == 403


def test_cookie_token(tmp_path: Path) -> None:
    access_policy, signer = policy(tmp_path, jwt={"cookie": "fanout_token"})
    access = access_policy.for_listener(trusted=False)
    token = signer.token(grants("t"))
    cookie = ("Cookie", f'theme=dark; fanout_token={token}; other="x=y"')
    assert subscribe(access, "/events?topic=t", cookie).user == "alice"
    # A proxy may split cookies over several headers.
    split = (("Cookie", "theme=dark"), ("Cookie", f"fanout_token={token}"))
    assert subscribe(access, "/events?topic=t", *split).user == "alice"
    twice = reject(access, "/events?topic=t", ("Cookie", f"fanout_token={token}; fanout_token=x"))
    assert twice.status == 400
    # Bearer wins over the cookie (fetch mode may send both).
    other = signer.token(grants("t"), sub="bob")
    assert subscribe(access, "/events?topic=t", cookie, bearer(other)).user == "bob"
    # Another cookie name is not read.
    assert reject(access, "/events?topic=t", ("Cookie", f"token={token}")).status == 403


def test_cookie_not_read_unless_configured(tmp_path: Path) -> None:
    access_policy, signer = policy(tmp_path, allow_anonymous=False)
    access = access_policy.for_listener(trusted=False)
    got = reject(access, "/events?topic=t", ("Cookie", f"fanout_token={signer.token()}"))
    assert got.reason == "authentication required"


def test_query_token_only_when_enabled(tmp_path: Path) -> None:
    access_policy, signer = policy(tmp_path)
    token = signer.token(grants("t"))
    got = reject(access_policy.for_listener(trusted=False), f"/events?topic=t&token={token}")
    assert got.status == 401
    assert "not enabled" in got.reason
    enabled, signer = policy(tmp_path, jwt={"query_token": True})
    token = signer.token(grants("t"))
    access = enabled.for_listener(trusted=False)
    assert subscribe(access, f"/events?topic=t&token={token}").user == "alice"
    assert reject(access, f"/events?topic=t&token={token}&token={token}").status == 400


def test_authorization_twice_and_other_schemes(tmp_path: Path) -> None:
    access_policy, signer = policy(tmp_path, allow_anonymous=False)
    access = access_policy.for_listener(trusted=False)
    token = signer.token(grants("t"))
    assert reject(access, "/events?topic=t", bearer(token), bearer(token)).status == 400
    basic = reject(access, "/events?topic=t", ("Authorization", "Basic YTpi"))
    assert basic.reason == "authentication required"
    assert subscribe(access, "/events?topic=t", ("Authorization", f"bearer  {token}")).user


def test_identity_header_is_ignored_in_jwt_mode(tmp_path: Path) -> None:
    access_policy, signer = policy(tmp_path)
    access = access_policy.for_listener(trusted=True)
    token = signer.token(grants("t"))
    got = subscribe(access, "/events?topic=t", bearer(token), ("X-Fanout-User", "root"))
    assert got.user == "alice"


def test_reason_in_the_challenge_cannot_break_the_header() -> None:
    from fanout.access import _challenge

    value = dict(_challenge("invalid_token", 'a"b\\c\r\nX: y'))["WWW-Authenticate"]
    assert value == 'Bearer realm="fanout", error="invalid_token", error_description="a?b?c??X: y"'


# -- CORS ----------------------------------------------------------------------


def test_cors_on_stream_and_refusals(tmp_path: Path) -> None:
    access_policy, signer = policy(
        tmp_path, jwt={"cookie": "tok"}, cors={"allow_origins": [APP], "allow_credentials": True}
    )
    access = access_policy.for_listener(trusted=False)
    origin = ("Origin", APP)
    token = signer.token(grants("t"))
    got = subscribe(access, "/events?topic=t", origin, ("Cookie", f"tok={token}"))
    headers = dict(got.headers)
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Vary"] == "Origin"
    head = stream_head(got)
    assert head.endswith(b"\r\n\r\n")
    assert f"Access-Control-Allow-Origin: {APP}\r\n".encode() in head
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    # A refusal carries the CORS headers too, so a fetch-mode page can read it.
    refused = reject(access, "/events?topic=other", origin, ("Cookie", f"tok={token}"))
    assert refused.status == 403
    assert dict(refused.headers)["Access-Control-Allow-Origin"] == APP
    # Another origin is refused before anything else is looked at.
    evil = reject(access, "/events?topic=t", ("Origin", "http://evil"), ("Cookie", f"tok={token}"))
    assert (evil.status, evil.reason) == (403, "origin not allowed")
    assert "Access-Control-Allow-Origin" not in dict(evil.headers)


def test_preflight_through_parse(tmp_path: Path) -> None:
    access_policy, _ = policy(tmp_path, cors={"allow_origins": [APP]})
    access = access_policy.for_listener(trusted=False)
    asked = (("Origin", APP), ("Access-Control-Request-Method", "GET"))
    got = parse(request("/events?topic=t", *asked, method="OPTIONS"), access, 32)
    assert isinstance(got, Answer)
    assert got.status == 204
    raw = response(got.status, "", got.headers)
    assert raw.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert raw.endswith(b"\r\n\r\n")
    assert b"Content-Length" not in raw
    assert b"Access-Control-Allow-Headers: Authorization, Last-Event-ID" in raw
    evil = (("Origin", "http://evil"), ("Access-Control-Request-Method", "GET"))
    refused = parse(request("/events", *evil, method="OPTIONS"), access, 32)
    assert isinstance(refused, Reject)
    assert refused.status == 403
    # Not a preflight: as before, only GET.
    plain = parse(request("/events", method="OPTIONS"), access, 32)
    assert isinstance(plain, Reject)
    assert plain.status == 405


@pytest.fixture(scope="module")
def fuzz_policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    # One key set for every example (hypothesis reruns the body many times).
    where = tmp_path_factory.mktemp("fuzz")
    return policy(where, jwt={"cookie": "tok", "query_token": True})[0]


_HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(
    authorization=_HEADER_TEXT,
    cookie=_HEADER_TEXT,
    query=st.text(max_size=200),
    origin=_HEADER_TEXT,
)
def test_arbitrary_credentials_never_raise(
    fuzz_policy: Policy, authorization: str, cookie: str, query: str, origin: str
) -> None:
    access = fuzz_policy.for_listener(trusted=True)
    headers = [
        (b"Host", b"x"),
        (b"Authorization", authorization.strip().encode("latin-1")),
        (b"Cookie", cookie.strip().encode("latin-1")),
        (b"Origin", origin.strip().encode("latin-1")),
        (b"X-Fanout-User", b"x"),
    ]
    target = "/events?topic=t&token=" + quote(query)
    for method in ("GET", "OPTIONS"):
        got = parse(h11.Request(method=method, target=target, headers=headers), access, 32)
        assert isinstance(got, Reject | Answer | Subscribe)
        if isinstance(got, Reject):
            assert 400 <= got.status < 500
            raw = response(got.status, got.reason, got.headers)
            assert raw.count(b"\r\n\r\n") == 1  # nothing from the input splits the head
