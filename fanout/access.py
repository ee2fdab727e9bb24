"""Who a connection is and what it may read, sans-IO: request headers in, a verdict out.

Built once from [auth] and [cors] (`Policy.from_config`), then one `Access` per
listener, which differ only in whether the listener is trusted. For each request,
`identify` finds the user and the grants:

- mode "none": anonymous; the grants are [auth] grants.
- mode "header": the trusted proxy's identity header names the user, and its grants
  header (when configured) adds patterns. Both are refused on untrusted listeners,
  and refused when sent twice (a proxy that appends instead of replacing).
- mode "jwt": a signed token, from `Authorization: Bearer`, else the configured
  cookie, else (only when enabled) the `token` query parameter; its `sub` is the
  user and its grants claim adds patterns.

`check_topics` then refuses (403, naming them) the topics no grant allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from . import grants as grants_mod
from .cors import Cors, Headers, Preflight
from .grants import Grants, PatternError
from .names import is_user
from .tokens import KeySet, TokenError, Verifier, key_sources

if TYPE_CHECKING:
    from .config import Config

Mode = Literal["none", "header", "jwt"]
# Named in WWW-Authenticate challenges.
REALM = "fanout"
MAX_REFUSED_NAMED = 8


@dataclass(frozen=True, slots=True)
class Denied:
    status: int
    reason: str
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Admitted:
    """Who the connection is, for the rest of its life."""

    user: str | None
    grants: Grants
    exp: float | None = None  # the token's expiry (mode "jwt"), seconds since the epoch
    info: dict[str, Any] | None = None  # the token's public info claim, for presence


def _quoted(text: str) -> str:
    # An auth-param value: printable ASCII without `"` and `\`, so nothing read from
    # a token can break out of the quotes or the header line.
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)


def _challenge(error: str | None = None, description: str | None = None) -> Headers:
    value = f'Bearer realm="{REALM}"'
    if error:
        value += f', error="{error}"'
    if description:
        value += f', error_description="{_quoted(description)}"'
    return (("WWW-Authenticate", value),)


_NO_CORS = Cors()


@dataclass(frozen=True, slots=True)
class Policy:
    """[auth] and [cors], read once and shared by every listener."""

    mode: Mode = "none"
    header: bytes = b"x-fanout-user"  # lower-case, as h11 gives header names
    header_name: str = "X-Fanout-User"
    grants_header: bytes = b""  # empty: none
    grants_header_name: str = ""
    allow_anonymous: bool = True
    grants: tuple[str, ...] = ("*",)
    verifier: Verifier | None = None
    cookie: str = ""
    query_token: bool = False
    cors: Cors = _NO_CORS

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        """Reads the key files in mode "jwt" (raises tokens.KeyFileError)."""
        auth, cors = config.auth, config.cors
        verifier = None
        if auth.mode == "jwt":
            jwt = auth.jwt
            keys = KeySet(key_sources(jwt.secret_file, jwt.public_key_files, jwt.jwks_file))
            verifier = Verifier(keys, jwt.audience, jwt.issuer, jwt.leeway_s, jwt.grants_claim)
        return cls(
            mode=auth.mode,
            header=auth.header.lower().encode(),
            header_name=auth.header,
            grants_header=auth.grants_header.lower().encode(),
            grants_header_name=auth.grants_header,
            allow_anonymous=auth.allow_anonymous,
            grants=tuple(default_grants(config)),
            verifier=verifier,
            cookie=auth.jwt.cookie,
            query_token=auth.jwt.query_token,
            cors=Cors.of(cors.allow_origins, cors.allow_credentials, cors.max_age_s),
        )

    @property
    def keys(self) -> KeySet | None:
        """The key set to `reload()` on SIGHUP (mode "jwt" only)."""
        return self.verifier.keys if self.verifier is not None else None

    def for_listener(self, trusted: bool) -> Access:
        return Access(self, trusted)


def default_grants(config: Config) -> list[str]:
    """[auth] grants, or its default: every topic, except in mode "jwt" (none)."""
    if config.auth.grants is not None:
        return config.auth.grants
    return [] if config.auth.mode == "jwt" else ["*"]


def _values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in headers if key == name]


def _cookies(headers: Sequence[tuple[bytes, bytes]], name: str) -> list[str]:
    # Split by hand rather than with http.cookies: SimpleCookie stops at the first
    # cookie it cannot parse, so another app's odd cookie on the same site would
    # hide ours. Browsers send `a=1; b=2`; a proxy may send several Cookie headers.
    found = []
    for header in _values(headers, b"cookie"):
        for pair in header.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key == name:
                found.append(value.strip().strip('"'))
    return found


@dataclass(frozen=True, slots=True)
class Access:
    """What one listener accepts."""

    policy: Policy
    trusted: bool

    def cors_headers(self, origin: str | None) -> Headers | None:
        return self.policy.cors.for_request(origin)

    def preflight(self, origin: str | None, method: str | None) -> Preflight | None:
        return self.policy.cors.preflight(origin, method)

    def identify(
        self, headers: Sequence[tuple[bytes, bytes]], query_tokens: Sequence[str] = ()
    ) -> Admitted | Denied:
        mode = self.policy.mode
        if mode == "jwt":
            return self._from_token(headers, query_tokens)
        if query_tokens:
            return Denied(400, 'the token query parameter is only read in auth mode "jwt"')
        if mode == "header":
            return self._from_headers(headers)
        return self._admit(None, ())

    def _admit(
        self,
        user: str | None,
        extra: Iterable[str],
        exp: float | None = None,
        info: dict[str, Any] | None = None,
    ) -> Admitted | Denied:
        try:
            bound = Grants.of((*self.policy.grants, *extra), user)
        except PatternError as exc:
            return Denied(400, f"{self.policy.grants_header_name}: {exc}")
        return Admitted(user, bound, exp, info)

    def _trusted_value(
        self, headers: Sequence[tuple[bytes, bytes]], name: bytes, label: str
    ) -> str | Denied | None:
        values = _values(headers, name)
        if not values:
            return None
        if not self.trusted:
            # A browser must not pick its own identity or grants: only a proxy in
            # front of a trusted listener may set these headers.
            return Denied(403, f"{label} is only accepted on a trusted listener")
        if len(values) > 1:
            # Two values mean a proxy that appends to what the client sent: which
            # one the proxy vouches for cannot be known, so neither is taken.
            return Denied(400, f"{label} sent more than once (set it in the proxy, do not add it)")
        return values[0]

    def _from_headers(self, headers: Sequence[tuple[bytes, bytes]]) -> Admitted | Denied:
        policy = self.policy
        user = self._trusted_value(headers, policy.header, "identity header")
        if isinstance(user, Denied):
            return user
        extra: list[str] = []
        if policy.grants_header:
            value = self._trusted_value(headers, policy.grants_header, "grants header")
            if isinstance(value, Denied):
                return value
            extra = grants_mod.split_header(value or "")
        if user is not None and not is_user(user):
            return Denied(403, "invalid user in identity header")
        if user is None and not policy.allow_anonymous:
            return Denied(401, "authentication required")
        return self._admit(user, extra)

    def _token(
        self, headers: Sequence[tuple[bytes, bytes]], query_tokens: Sequence[str]
    ) -> str | Denied | None:
        policy = self.policy
        authorization = _values(headers, b"authorization")
        if len(authorization) > 1:
            return Denied(400, "Authorization sent more than once", _challenge("invalid_request"))
        if authorization:
            scheme, _, credentials = authorization[0].strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
        if policy.cookie:
            cookies = _cookies(headers, policy.cookie)
            if len(cookies) > 1:
                reason = f"cookie {policy.cookie} sent more than once"
                return Denied(400, reason, _challenge("invalid_request"))
            if cookies and cookies[0]:
                return cookies[0]
        if query_tokens:
            if not policy.query_token:
                return Denied(
                    401,
                    "the token query parameter is not enabled (send Authorization: Bearer)",
                    _challenge("invalid_request"),
                )
            if len(query_tokens) > 1:
                return Denied(400, "token sent more than once", _challenge("invalid_request"))
            return query_tokens[0]
        return None

    def _from_token(
        self, headers: Sequence[tuple[bytes, bytes]], query_tokens: Sequence[str]
    ) -> Admitted | Denied:
        policy = self.policy
        token = self._token(headers, query_tokens)
        if isinstance(token, Denied):
            return token
        if token is None:
            if policy.allow_anonymous:
                return self._admit(None, ())
            return Denied(401, "authentication required", _challenge())
        assert policy.verifier is not None
        try:
            claims = policy.verifier.verify(token)
        except TokenError as exc:
            return Denied(401, f"invalid token: {exc.reason}", _challenge(exc.error, exc.reason))
        return self._admit(claims.user, claims.grants, claims.exp, claims.info)

    def check_topics(self, admitted: Admitted, topics: Iterable[str]) -> Denied | None:
        """403 naming the topics that no grant of this connection allows."""
        refused = admitted.grants.refused(topics)
        if not refused:
            return None
        named = ", ".join(refused[:MAX_REFUSED_NAMED])
        if len(refused) > MAX_REFUSED_NAMED:
            named += f" (and {len(refused) - MAX_REFUSED_NAMED} more)"
        reason = f"not allowed to subscribe to: {named}"
        headers: Headers = ()
        if self.policy.mode == "jwt":
            headers = _challenge("insufficient_scope", "no grant for the topics asked")
        return Denied(403, reason, headers)
