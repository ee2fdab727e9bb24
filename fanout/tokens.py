"""Signed tokens (JWT): key sets read from files, and the verification of one token.

PyJWT (with cryptography for RS256, ES256 and EdDSA) checks the signature and the
registered claims; this module picks the key, says which claims are required, and
turns the result into what fanout needs: the user (`sub`), the topic grants and the
public info from the grants claim, and the expiry (`exp`).

Each key is bound to exactly one algorithm, known from the key itself (a secret file
is HS256; a PEM public key is RS256, ES256 or EdDSA by its type; a JWK by its `alg`,
or else by its type), and a token is only ever verified with the algorithm of the key
it names. That is what stops algorithm confusion (an RS256 public key used as an HS256
secret, or `alg: none`): the token's header chooses among our keys, never the method.

No I/O happens per token: the files are read when the KeySet is made and when
`reload()` is called (the daemon calls it on SIGHUP).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .grants import PatternError, check
from .names import is_user

# The shortest HS256 secret accepted: RFC 7518 asks for at least the hash size.
MIN_SECRET_BYTES = 32
# Bounds on what a token may carry into the daemon's memory for the connection's life.
MAX_GRANTS = 64
MAX_INFO_BYTES = 2048


class KeyFileError(Exception):
    """A key file that cannot be used; one line, naming the file (never its content)."""


class TokenError(Exception):
    """A token that does not admit its bearer.

    `reason` is safe to send to the client and to log: it says what was wrong with
    the token, never anything about our keys. `error` is RFC 6750's error code for
    the `WWW-Authenticate: Bearer` header.
    """

    def __init__(self, reason: str, error: str = "invalid_token") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


@dataclass(frozen=True, slots=True)
class _Key:
    key: Any  # bytes (HS256) or a cryptography public key object
    algorithm: str
    kid: str | None


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says, in fanout's terms."""

    user: str
    grants: tuple[str, ...]  # checked patterns, `{user}` not yet bound
    exp: float  # seconds since the epoch
    info: dict[str, Any] | None = None  # the grants claim's public `info`, for presence


def _algorithm_of(key: Any, where: str) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise KeyFileError(f"{where}: RSA keys shorter than 2048 bits are refused")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyFileError(f"{where}: ES256 needs a P-256 key, this is {key.curve.name}")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise KeyFileError(f"{where}: expected an RSA, P-256 or Ed25519 public key")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None


def _secret(path: str) -> _Key:
    # A trailing newline from `echo` or an editor is not part of the secret.
    secret = _read(path).rstrip(b"\r\n")
    if len(secret) < MIN_SECRET_BYTES:
        raise KeyFileError(
            f"{path}: an HS256 secret needs at least {MIN_SECRET_BYTES} bytes,"
            f" this one has {len(secret)}"
        )
    return _Key(secret, "HS256", None)


def _pem(path: str) -> _Key:
    data = _read(path)
    if b"PRIVATE KEY" in data:
        # Never needed here, and not to be left readable by the daemon's user.
        raise KeyFileError(f"{path}: holds a private key; give fanout the public key only")
    try:
        key = load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(f"{path}: not a PEM public key") from None
    return _Key(key, _algorithm_of(key, path), None)


def _jwks(path: str) -> list[_Key]:
    try:
        document = json.loads(_read(path))
    except ValueError:
        raise KeyFileError(f"{path}: not valid JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyFileError(f'{path}: expected a JWKS object {{"keys": [...]}}')
    keys: list[_Key] = []
    for i, jwk in enumerate(document["keys"]):
        where = f"{path}: keys[{i}]"
        if not isinstance(jwk, dict):
            raise KeyFileError(f"{where}: not an object")
        if jwk.get("use", "sig") != "sig":
            continue  # an encryption key published in the same set
        if "d" in jwk:
            raise KeyFileError(f"{where}: holds a private key; publish the public part only")
        try:
            parsed = jwt.PyJWK(jwk)
        except jwt.PyJWTError as exc:
            raise KeyFileError(f"{where}: {exc}") from None
        algorithm = parsed.algorithm_name
        if algorithm not in ("HS256", "RS256", "ES256", "EdDSA"):
            raise KeyFileError(f"{where}: algorithm {algorithm} is not supported")
        if algorithm != "HS256" and _algorithm_of(parsed.key, where) != algorithm:
            raise KeyFileError(f"{where}: alg {algorithm} does not fit the key's type")
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise KeyFileError(f"{where}: kid must be a string")
        if kid is not None and any(k.kid == kid for k in keys):
            raise KeyFileError(f"{where}: kid {kid!r} appears twice")
        keys.append(_Key(parsed.key, algorithm, kid))
    return keys


@dataclass(frozen=True, slots=True)
class KeySources:
    """Where the keys are: the files named in [auth.jwt]."""

    secret_file: str = ""
    public_key_files: Sequence[str] = ()
    jwks_file: str = ""


class KeySet:
    """The verification keys, read from their files; `reload()` reads them again.

    A reload is all or nothing: if any file cannot be used, KeyFileError is raised
    and the keys in force stay as they were (a half-written JWKS during a rotation
    must not lock everybody out).
    """

    def __init__(self, sources: KeySources) -> None:
        self.sources = sources
        self._by_kid: dict[str, _Key] = {}
        self._unnamed: tuple[_Key, ...] = ()
        self.reload()

    def reload(self) -> None:
        sources = self.sources
        keys: list[_Key] = []
        if sources.secret_file:
            keys.append(_secret(sources.secret_file))
        keys += [_pem(path) for path in sources.public_key_files]
        if sources.jwks_file:
            keys += _jwks(sources.jwks_file)
        if not keys:
            raise KeyFileError("no usable key in the configured key files")
        # Swapped in one assignment each, after everything parsed.
        self._by_kid = {k.kid: k for k in keys if k.kid is not None}
        self._unnamed = tuple(k for k in keys if k.kid is None)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._by_kid)

    def candidates(self, header: dict[str, Any]) -> list[_Key]:
        """The keys a token with this (unverified) header may have been signed with."""
        algorithm = header.get("alg")
        kid = header.get("kid")
        named = self._by_kid.get(kid) if isinstance(kid, str) else None
        # No kid, or one we do not know, is tried on the keys without ids: many
        # issuers always set a kid, which a PEM file or a secret cannot carry.
        found = [named] if named is not None else list(self._unnamed)
        found = [k for k in found if k.algorithm == algorithm]
        if not found and kid is not None and named is None:
            # Names no key we have: an old key rotated out, or another issuer's.
            raise TokenError("unknown key id")
        if not found:
            raise TokenError("algorithm not accepted")
        return found


@dataclass(frozen=True, slots=True)
class Verifier:
    """Checks one token against a KeySet and [auth.jwt]'s claim rules."""

    keys: KeySet
    audience: str = ""
    issuer: str = ""
    leeway_s: float = 30.0
    grants_claim: str = "fanout"
    _required: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        required = ["exp", "sub"]
        if self.audience:
            required.append("aud")
        if self.issuer:
            required.append("iss")
        object.__setattr__(self, "_required", tuple(required))

    def verify(self, token: str) -> Claims:
        """The token's claims, or TokenError with a reason safe to send back."""
        header = _header(token)
        payload: dict[str, Any] | None = None
        for key in self.keys.candidates(header):
            try:
                payload = jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],
                    audience=self.audience or None,
                    issuer=self.issuer or None,
                    leeway=self.leeway_s,
                    options={"require": list(self._required)},
                )
                break
            except jwt.InvalidSignatureError:
                continue  # another unnamed key of the same algorithm may fit
            except jwt.PyJWTError as exc:
                raise TokenError(_reason(exc)) from None
        if payload is None:
            raise TokenError("bad signature")
        return self._claims(payload)

    def _claims(self, payload: dict[str, Any]) -> Claims:
        user = payload["sub"]
        if not isinstance(user, str) or not is_user(user):
            raise TokenError("invalid sub claim")
        name = self.grants_claim
        claim = payload.get(name, {})
        if not isinstance(claim, dict):
            raise TokenError(f"the {name} claim must be an object")
        grants = claim.get("subscribe", [])
        if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
            raise TokenError(f"{name}.subscribe must be a list of strings")
        if len(grants) > MAX_GRANTS:
            raise TokenError(f"{name}.subscribe has more than {MAX_GRANTS} patterns")
        try:
            for pattern in grants:
                check(pattern)
        except PatternError as exc:
            raise TokenError(f"{name}.subscribe: {exc}") from None
        info = claim.get("info")
        if info is not None:
            if not isinstance(info, dict):
                raise TokenError(f"{name}.info must be an object")
            if len(json.dumps(info, separators=(",", ":"))) > MAX_INFO_BYTES:
                raise TokenError(f"{name}.info is over {MAX_INFO_BYTES} bytes")
        return Claims(user, tuple(grants), float(payload["exp"]), info)


def _header(token: str) -> dict[str, Any]:
    """The token's header, read only to choose the key (PyJWT then checks it whole).

    jwt.get_unverified_header would do, but it validates every segment's alphabet
    character by character, and decode does all of it again: read here, the header
    costs a third of a verification less. Whatever it says, a token is verified
    with one of our keys and that key's own algorithm, so a header read differently
    here than by PyJWT can only fail verification, never pass it."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError):
        raise TokenError("malformed token") from None
    if not isinstance(header, dict):
        raise TokenError("malformed token")
    return header


def _reason(exc: jwt.PyJWTError) -> str:
    # PyJWT's own messages name claims and formats, not keys, but they are mapped
    # to fixed words anyway so nothing from a key or a library change can leak.
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not yet valid"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing {exc.claim} claim"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "algorithm not accepted"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "invalid iat claim"
    return "malformed token"


def key_sources(secret_file: str, public_key_files: Sequence[str], jwks_file: str) -> KeySources:
    """KeySources with each path made absolute, so a reload after chdir reads the same."""
    return KeySources(
        os.path.abspath(secret_file) if secret_file else "",
        tuple(os.path.abspath(p) for p in public_key_files),
        os.path.abspath(jwks_file) if jwks_file else "",
    )
