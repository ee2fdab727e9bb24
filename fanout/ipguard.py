"""Per-address limits, sans-IO: concurrent connections and a connect rate per client
address (or per IPv6 prefix), so that one client cannot take everyone's share.

Off by default (0). Counted per process: with workers each worker holds its own
counts, so the effective cap is up to N times the setting. Connections from a Unix
socket (nginx in front) have no address and are not counted here: limit them in
nginx (`limit_conn`, `limit_req`), which sees the real client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

# Buckets of addresses not seen for this long are forgotten (bounded memory).
_FORGET_AFTER_S = 60.0
_SWEEP_EVERY = 4096


@dataclass(slots=True)
class _Bucket:
    open: int
    tokens: float
    seen: float


class IpGuard:
    def __init__(
        self,
        max_per_ip: int,
        rate_per_s: float,
        burst: int,
        ipv6_prefix: int,
        clock: Callable[[], float],
    ) -> None:
        self.max_per_ip = max_per_ip
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self._v6_prefix = ipv6_prefix
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._checks = 0

    @property
    def enabled(self) -> bool:
        return self.max_per_ip > 0 or self.rate > 0

    def key(self, peer: object) -> str | None:
        """The address a connection counts for: the IPv4 address, or the IPv6 /prefix."""
        if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
            return None  # a Unix socket peer
        try:
            address = ipaddress.ip_address(peer[0])
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            net = ipaddress.IPv6Network((address, self._v6_prefix), strict=False)
            return str(net)
        return str(address)

    def admit(self, key: str) -> str | None:
        """Why a new connection from `key` is refused now, or None (then it counts)."""
        now = self._clock()
        self._checks += 1
        if self._checks % _SWEEP_EVERY == 0:
            self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(0, float(self.burst), now)
        elif self.rate > 0:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.seen) * self.rate)
        bucket.seen = now
        if self.max_per_ip and bucket.open >= self.max_per_ip:
            return f"too many connections from this address (at most {self.max_per_ip})"
        if self.rate > 0:
            if bucket.tokens < 1:
                return f"connecting too often from this address (at most {self.rate:g}/s)"
            bucket.tokens -= 1
        bucket.open += 1
        return None

    def release(self, key: str) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None and bucket.open > 0:
            bucket.open -= 1

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        cutoff = now - _FORGET_AFTER_S
        for key in [k for k, b in self._buckets.items() if not b.open and b.seen < cutoff]:
            del self._buckets[key]
