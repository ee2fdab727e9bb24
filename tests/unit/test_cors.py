"""CORS decisions, values in and out."""

from __future__ import annotations

import pytest

from fanout.cors import Cors, check_origin

APP = "https://app.example.com"


def test_off_by_default() -> None:
    cors = Cors()
    assert cors.for_request(APP) == ()
    assert cors.preflight(APP, "GET") is None


def test_allowed_origin_is_echoed_with_vary_and_credentials() -> None:
    cors = Cors.of([APP], credentials=True, max_age_s=60)
    headers = dict(cors.for_request(APP) or ())
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Vary"] == "Origin"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    # Origins compare case-insensitively (scheme and host are).
    assert cors.for_request("HTTPS://APP.example.com") is not None


def test_without_credentials_no_credentials_header() -> None:
    headers = dict(Cors.of([APP], credentials=False, max_age_s=60).for_request(APP) or ())
    assert "Access-Control-Allow-Credentials" not in headers


def test_other_origins_are_refused_and_no_origin_only_varies() -> None:
    cors = Cors.of([APP], credentials=True, max_age_s=60)
    assert cors.for_request("https://evil.example") is None
    assert cors.for_request("https://app.example.com:8443") is None
    assert cors.for_request(None) == (("Vary", "Origin"),)


def test_wildcard_without_credentials() -> None:
    cors = Cors.of(["*"], credentials=False, max_age_s=60)
    assert dict(cors.for_request("https://any.example") or ())["Access-Control-Allow-Origin"] == "*"


def test_wildcard_with_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="wildcard origin cannot be combined with credentials"):
        Cors.of(["*"], credentials=True, max_age_s=60)


def test_preflight() -> None:
    cors = Cors.of([APP], credentials=True, max_age_s=120)
    answer = cors.preflight(APP, "GET")
    assert answer is not None
    assert answer.status == 204
    headers = dict(answer.headers)
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Methods"] == "GET"
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "last-event-id"} <= allowed
    assert headers["Access-Control-Max-Age"] == "120"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    refused = cors.preflight("https://evil.example", "GET")
    assert refused is not None
    assert refused.status == 403
    assert "Access-Control-Allow-Origin" not in dict(refused.headers)
    wrong_method = cors.preflight(APP, "POST")
    assert wrong_method is not None
    assert wrong_method.status == 405
    assert cors.preflight(APP, None) is None  # a plain OPTIONS, not a preflight
    assert cors.preflight(None, "GET") is None


@pytest.mark.parametrize(
    "origin",
    ["null", "app.example.com", "https://app.example.com/", "https://a.example/path", "ftp://x"],
)
def test_bad_origins(origin: str) -> None:
    with pytest.raises(ValueError, match=r"null|expected scheme"):
        check_origin(origin)


@pytest.mark.parametrize(
    "origin", ["*", "http://127.0.0.1:8080", "https://app.example.com", "http://[::1]:3000"]
)
def test_good_origins(origin: str) -> None:
    assert check_origin(origin) == origin
