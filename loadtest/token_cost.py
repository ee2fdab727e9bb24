"""The cost of admitting one connection with a token, per signing algorithm.

    flock /tmp/fanout-bench.lock .venv/bin/python -m loadtest.token_cost
    flock /tmp/fanout-bench.lock .venv/bin/python -m loadtest.token_cost --n 5000 --repeat 7

For HS256, RS256 (2048-bit), ES256 (P-256) and EdDSA (Ed25519): a key made here,
written to a key file and read by fanout's own KeySet, tokens issued by PyJWT, then

- `verify`: fanout.tokens.Verifier.verify, one token (signature, exp, sub, grants);
- `parse`: fanout.subscribe.parse of a whole `GET /events?topic=..&topic=..` request
  with `Authorization: Bearer` (token found, verified, grants bound to the user,
  both topics checked): everything decided when a request arrives, in one process,
  without the socket.

Each figure is the best of --repeat runs of --n calls, in µs per call, and what a
reconnect storm of 10,000 clients costs in CPU seconds at that rate. Each run is a
fresh token so nothing is cached between calls (fanout caches nothing either).
Bounded: n x repeat x 4 algorithms x 2 measures calls, a few seconds in all.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import h11
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from fanout.access import Policy
from fanout.config import from_mapping
from fanout.subscribe import Subscribe, parse

ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")
STORM = 10_000


def _key(algorithm: str, where: Path) -> tuple[Any, dict[str, Any]]:
    """(signing key, [auth.jwt] settings that point fanout at the verifying key)."""
    if algorithm == "HS256":
        secret = secrets.token_hex(32).encode()
        (where / "secret").write_bytes(secret)
        return secret, {"secret_file": str(where / "secret")}
    private: Any
    if algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = where / f"{algorithm}.pem"
    path.write_bytes(pem)
    return private, {"public_key_files": [str(path)]}


def _best(calls: int, repeat: int, run: Any) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run(calls)
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def measure(algorithm: str, calls: int, repeat: int, where: Path) -> tuple[float, float]:
    signing, settings = _key(algorithm, where)
    cfg = from_mapping({"auth": {"mode": "jwt", "allow_anonymous": False, "jwt": settings}})
    policy = Policy.from_config(cfg)
    verifier = policy.verifier
    assert verifier is not None
    access = policy.for_listener(trusted=False)
    claims = {
        "sub": "user-42",
        "exp": int(time.time()) + 3600,
        "fanout": {"subscribe": ["orders", "user:{user}:*"], "info": {"name": "Ada"}},
    }
    tokens = [
        jwt.encode({**claims, "jti": str(i)}, signing, algorithm=algorithm) for i in range(calls)
    ]
    requests = [
        h11.Request(
            method="GET",
            target="/events?topic=orders&topic=user:user-42:inbox",
            headers=[("Host", "fanout"), ("Authorization", f"Bearer {t}")],
        )
        for t in tokens
    ]
    assert isinstance(parse(requests[0], access, 32), Subscribe)

    def verify(n: int) -> None:
        for token in tokens[:n]:
            verifier.verify(token)

    def parse_all(n: int) -> None:
        for request in requests[:n]:
            parse(request, access, 32)

    return _best(calls, repeat, verify), _best(calls, repeat, parse_all)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="calls per run (<= 100000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best counts (<= 20)")
    args = parser.parse_args()
    calls, repeat = min(max(args.n, 1), 100_000), min(max(args.repeat, 1), 20)
    print(f"| algorithm | verify µs | parse µs (whole request) | {STORM:,} reconnects, CPU s |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="fo-tokens-") as where:
        for algorithm in ALGORITHMS:
            verify_us, parse_us = measure(algorithm, calls, repeat, Path(where))
            print(
                f"| {algorithm} | {verify_us:.1f} | {parse_us:.1f} | {parse_us * STORM / 1e6:.2f} |"
            )


if __name__ == "__main__":
    main()
