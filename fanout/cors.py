"""CORS for /events, sans-IO: an Origin in, the headers to answer with out.

Only origins on the allow-list get `Access-Control-Allow-Origin` (echoed, never `*`
when credentials are allowed: browsers refuse that pair, and it would hand every
site the user's cookies' worth of streams). Every answer that depends on the Origin
says `Vary: Origin`, so a cache never serves one origin's answer to another.

A request with an Origin that is not allowed is refused outright (403), not just
left without the header: with cookie tokens the browser has already sent the
user's credentials, and a stream the page cannot read is only a cost. Same-origin
EventSource and fetch GETs carry no Origin header, so they are not affected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

Headers = tuple[tuple[str, str], ...]

# scheme://host[:port], as browsers send it: no path, no trailing slash.
_ORIGIN = re.compile(
    r"^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?\Z|^https?://\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?\Z"
)
# What fanout.js's fetch mode and a resuming EventSource send beyond the safelisted
# headers; a preflight asking for anything else is answered without it, and the
# browser then refuses the request itself.
ALLOW_HEADERS = ("Authorization", "Last-Event-ID", "Cache-Control")
ALLOW_METHODS = ("GET",)


def check_origin(origin: str) -> str:
    """An allow-list entry as written in config, or ValueError saying why not."""
    if origin == "*":
        return origin
    if origin == "null":
        # Sent by sandboxed iframes and file: pages alike: allowing it allows them all.
        raise ValueError('"null" cannot be allowed (any sandboxed page sends it)')
    if not _ORIGIN.match(origin):
        raise ValueError(f"expected scheme://host[:port] with no path, got {origin[:80]!r}")
    return origin


@dataclass(frozen=True, slots=True)
class Preflight:
    """The answer to an OPTIONS preflight: 204 with these headers, or a refusal."""

    status: int
    reason: str
    headers: Headers


@dataclass(frozen=True, slots=True)
class Cors:
    allow_origins: frozenset[str] = frozenset()
    allow_credentials: bool = False
    max_age_s: int = 600

    @classmethod
    def of(cls, origins: Sequence[str], credentials: bool, max_age_s: int) -> Cors:
        checked = frozenset(check_origin(o.lower()) for o in origins)
        if credentials and "*" in checked:
            raise ValueError("a wildcard origin cannot be combined with credentials")
        return cls(checked, credentials, max_age_s)

    @property
    def enabled(self) -> bool:
        return bool(self.allow_origins)

    def _allowed(self, origin: str) -> bool:
        return "*" in self.allow_origins or origin.lower() in self.allow_origins

    def _allow(self, origin: str) -> Headers:
        if not self.allow_credentials and "*" in self.allow_origins:
            # Same answer for every origin: no Vary needed, but harmless and uniform.
            return (("Access-Control-Allow-Origin", "*"), ("Vary", "Origin"))
        headers: Headers = (("Access-Control-Allow-Origin", origin), ("Vary", "Origin"))
        if self.allow_credentials:
            headers += (("Access-Control-Allow-Credentials", "true"),)
        return headers

    def for_request(self, origin: str | None) -> Headers | None:
        """Headers for an answer to a GET (stream or refusal); None: refuse the origin."""
        if not self.enabled:
            return ()
        if origin is None:
            return (("Vary", "Origin"),)
        if not self._allowed(origin):
            return None
        # Lets fanout.js read Retry-After on a 429/503 in fetch mode.
        return (*self._allow(origin), ("Access-Control-Expose-Headers", "Retry-After"))

    def preflight(self, origin: str | None, method: str | None) -> Preflight | None:
        """The answer to an OPTIONS request; None when it is not a CORS preflight."""
        if not self.enabled or origin is None or method is None:
            return None
        if not self._allowed(origin):
            return Preflight(403, f"origin {origin[:80]} is not allowed", (("Vary", "Origin"),))
        if method not in ALLOW_METHODS:
            return Preflight(
                405, f"{method[:16]} is not allowed here", (("Allow", "GET, OPTIONS"),)
            )
        headers = (
            *self._allow(origin),
            ("Access-Control-Allow-Methods", ", ".join(ALLOW_METHODS)),
            ("Access-Control-Allow-Headers", ", ".join(ALLOW_HEADERS)),
            ("Access-Control-Max-Age", str(self.max_age_s)),
        )
        return Preflight(204, "", headers)
