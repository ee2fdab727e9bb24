"""Real keys and tokens for the tests: made with cryptography, signed by PyJWT."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")


@dataclass
class Signer:
    """One key pair (or secret) with the algorithm it signs with."""

    algorithm: str
    private: Any
    public: Any
    kid: str | None = None

    @classmethod
    def new(cls, algorithm: str, kid: str | None = None) -> Signer:
        if algorithm == "HS256":
            secret = secrets.token_bytes(32).hex().encode()
            return cls(algorithm, secret, secret, kid)
        private: Any
        if algorithm == "RS256":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif algorithm == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        elif algorithm == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(algorithm)
        return cls(algorithm, private, private.public_key(), kid)

    def token(self, claims: dict[str, Any] | None = None, **extra: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"sub": "alice", "iat": now, "exp": now + 300}
        payload.update(claims or {})
        payload.update(extra)
        payload = {k: v for k, v in payload.items() if v is not None}
        headers = {"kid": self.kid} if self.kid else None
        return jwt.encode(payload, self.private, algorithm=self.algorithm, headers=headers)

    def pem(self) -> bytes:
        assert self.algorithm != "HS256"
        return bytes(
            self.public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        data: dict[str, Any] = json.loads(algorithm.to_jwk(self.public))
        data["alg"] = self.algorithm
        if self.kid:
            data["kid"] = self.kid
        return data

    def write(self, path: Path) -> Path:
        """The verification side of this key, as fanout reads it."""
        path.write_bytes(self.public + b"\n" if self.algorithm == "HS256" else self.pem())
        return path


def write_jwks(path: Path, *signers: Signer) -> Path:
    # Written whole then renamed, as a deploy would, so a reader never sees half.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": [s.jwk() for s in signers]}))
    tmp.replace(path)
    return path


def grants(*patterns: str, **info: Any) -> dict[str, Any]:
    claim: dict[str, Any] = {"subscribe": list(patterns)}
    if info:
        claim["info"] = info
    return {"fanout": claim}
