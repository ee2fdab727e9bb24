"""Key sets and token verification: tokens issued by PyJWT here, checked by fanout.tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest

from fanout.tokens import KeyFileError, KeySet, KeySources, TokenError, Verifier
from tests.jwt_keys import ALGORITHMS, Signer, grants, write_jwks


def keyset_for(tmp_path: Path, signer: Signer) -> KeySet:
    path = signer.write(tmp_path / f"key-{signer.algorithm}")
    if signer.algorithm == "HS256":
        return KeySet(KeySources(secret_file=str(path)))
    return KeySet(KeySources(public_key_files=(str(path),)))


def refusal(verifier: Verifier, token: str) -> TokenError:
    with pytest.raises(TokenError) as info:
        verifier.verify(token)
    return info.value


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_from_its_key_file(tmp_path: Path, algorithm: str) -> None:
    signer = Signer.new(algorithm)
    verifier = Verifier(keyset_for(tmp_path, signer))
    exp = int(time.time()) + 120
    claims = verifier.verify(signer.token(grants("orders", "user:{user}:*", name="A"), exp=exp))
    assert claims.user == "alice"
    assert claims.grants == ("orders", "user:{user}:*")
    assert claims.exp == exp
    assert claims.info == {"name": "A"}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_key_of_the_same_kind_that_did_not_sign_is_a_bad_signature(
    tmp_path: Path, algorithm: str
) -> None:
    verifier = Verifier(keyset_for(tmp_path, Signer.new(algorithm)))
    error = refusal(verifier, Signer.new(algorithm).token())
    assert error.reason == "bad signature"
    assert error.error == "invalid_token"


def test_another_algorithm_is_not_accepted(tmp_path: Path) -> None:
    verifier = Verifier(keyset_for(tmp_path, Signer.new("ES256")))
    assert refusal(verifier, Signer.new("RS256").token()).reason == "algorithm not accepted"


def test_rs256_public_key_cannot_be_used_as_an_hmac_secret(tmp_path: Path) -> None:
    # The classic confusion: sign HS256 with the server's public key as the secret.
    rsa = Signer.new("RS256")
    verifier = Verifier(keyset_for(tmp_path, rsa))
    # PyJWT refuses to sign with a PEM as an HMAC secret, so the forgery is made by hand.
    forged = _hs256_with(rsa.pem(), {"sub": "mallory", "exp": int(time.time()) + 60})
    assert refusal(verifier, forged).reason == "algorithm not accepted"


def _hs256_with(secret: bytes, payload: dict[str, object]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def test_alg_none_is_refused(tmp_path: Path) -> None:
    verifier = Verifier(keyset_for(tmp_path, Signer.new("HS256")))
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none")
    assert refusal(verifier, token).reason == "algorithm not accepted"


def test_expiry_with_leeway(tmp_path: Path) -> None:
    signer = Signer.new("HS256")
    keys = keyset_for(tmp_path, signer)
    ten_ago = int(time.time()) - 10
    assert Verifier(keys, leeway_s=30).verify(signer.token(exp=ten_ago)).user == "alice"
    error = refusal(Verifier(keys, leeway_s=0), signer.token(exp=ten_ago))
    assert (error.reason, error.error) == ("token expired", "invalid_token")
    future = int(time.time()) + 600
    assert refusal(Verifier(keys, leeway_s=0), signer.token(nbf=future)).reason == (
        "token not yet valid"
    )


def test_exp_and_sub_are_required(tmp_path: Path) -> None:
    signer = Signer.new("HS256")
    verifier = Verifier(keyset_for(tmp_path, signer))
    assert refusal(verifier, signer.token(exp=None)).reason == "missing exp claim"
    assert refusal(verifier, signer.token(sub=None)).reason == "missing sub claim"
    assert refusal(verifier, signer.token(sub=42)).reason == "malformed token"
    assert refusal(verifier, signer.token(sub="a\nb")).reason == "invalid sub claim"


def test_audience_and_issuer(tmp_path: Path) -> None:
    signer = Signer.new("ES256")
    keys = keyset_for(tmp_path, signer)
    verifier = Verifier(keys, audience="fanout", issuer="https://app.example")
    good = signer.token(aud="fanout", iss="https://app.example")
    assert verifier.verify(good).user == "alice"
    assert refusal(verifier, signer.token(aud="other", iss="https://app.example")).reason == (
        "wrong audience"
    )
    assert refusal(verifier, signer.token(aud="fanout", iss="https://evil")).reason == (
        "wrong issuer"
    )
    assert refusal(verifier, signer.token(iss="https://app.example")).reason == (
        "missing aud claim"
    )
    assert refusal(verifier, signer.token(aud="fanout")).reason == "missing iss claim"
    # Not configured: not checked.
    assert Verifier(keys).verify(signer.token(iss="anyone")).user == "alice"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b.c", "e30.e30.", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln", "x" * 5000],
)
def test_malformed_tokens(tmp_path: Path, token: str) -> None:
    verifier = Verifier(keyset_for(tmp_path, Signer.new("HS256")))
    error = refusal(verifier, token)
    assert error.error == "invalid_token"
    assert error.reason in {"malformed token", "algorithm not accepted", "bad signature"}


@pytest.mark.parametrize(
    ("claim", "reason"),
    [
        ({"fanout": "orders"}, "the fanout claim must be an object"),
        ({"fanout": {"subscribe": "orders"}}, "fanout.subscribe must be a list of strings"),
        ({"fanout": {"subscribe": ["a b"]}}, "fanout.subscribe: invalid grant"),
        ({"fanout": {"subscribe": ["t?"]}}, "fanout.subscribe: invalid grant"),
        ({"fanout": {"subscribe": ["t"] * 65}}, "more than 64 patterns"),
        ({"fanout": {"info": [1]}}, "fanout.info must be an object"),
        ({"fanout": {"info": {"x": "y" * 3000}}}, "fanout.info is over"),
    ],
)
def test_bad_grants_claim(tmp_path: Path, claim: dict[str, object], reason: str) -> None:
    signer = Signer.new("HS256")
    verifier = Verifier(keyset_for(tmp_path, signer))
    assert reason in refusal(verifier, signer.token(claim)).reason


def test_no_grants_claim_is_no_grants_and_the_claim_name_is_configurable(tmp_path: Path) -> None:
    signer = Signer.new("HS256")
    keys = keyset_for(tmp_path, signer)
    assert Verifier(keys).verify(signer.token()).grants == ()
    token = signer.token({"sse": {"subscribe": ["orders"]}})
    assert Verifier(keys, grants_claim="sse").verify(token).grants == ("orders",)
    assert Verifier(keys).verify(token).grants == ()


def test_reasons_never_carry_key_material(tmp_path: Path) -> None:
    signer = Signer.new("HS256")
    verifier = Verifier(keyset_for(tmp_path, signer))
    secret = signer.public.decode()
    for token in (Signer.new("HS256").token(), signer.token(exp=1), "a.b.c"):
        error = refusal(verifier, token)
        assert secret not in error.reason
        assert secret[:8] not in str(error)


def test_jwks_kid_rotation_by_reload(tmp_path: Path) -> None:
    old, new = Signer.new("RS256", kid="k1"), Signer.new("EdDSA", kid="k2")
    path = write_jwks(tmp_path / "jwks.json", old)
    keys = KeySet(KeySources(jwks_file=str(path)))
    verifier = Verifier(keys)
    assert verifier.verify(old.token()).user == "alice"
    assert refusal(verifier, new.token()).reason == "unknown key id"

    # Rotation step 1: publish the new key next to the old one.
    write_jwks(path, old, new)
    keys.reload()
    assert keys.kids == {"k1", "k2"}
    assert verifier.verify(old.token()).user == "alice"
    assert verifier.verify(new.token(sub="bob")).user == "bob"

    # Step 2: retire the old key; its tokens stop working.
    write_jwks(path, new)
    keys.reload()
    assert refusal(verifier, old.token()).reason == "unknown key id"
    assert verifier.verify(new.token()).user == "alice"


def test_a_failed_reload_keeps_the_keys_in_force(tmp_path: Path) -> None:
    signer = Signer.new("ES256", kid="k1")
    path = write_jwks(tmp_path / "jwks.json", signer)
    keys = KeySet(KeySources(jwks_file=str(path)))
    path.write_text('{"keys": [')  # a half-written file
    with pytest.raises(KeyFileError, match="not valid JSON"):
        keys.reload()
    assert Verifier(keys).verify(signer.token()).user == "alice"


def test_a_kid_the_jwks_does_not_have_among_several_keys(tmp_path: Path) -> None:
    a, b = Signer.new("ES256", kid="a"), Signer.new("ES256", kid="b")
    keys = KeySet(KeySources(jwks_file=str(write_jwks(tmp_path / "j.json", a, b))))
    assert Verifier(keys).verify(b.token()).user == "alice"
    stranger = Signer.new("ES256", kid="c")
    assert refusal(Verifier(keys), stranger.token()).reason == "unknown key id"
    # Claiming a known kid does not help a token signed by another key.
    impostor = Signer(a.algorithm, stranger.private, stranger.public, kid="a")
    assert refusal(Verifier(keys), impostor.token()).reason == "bad signature"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"short\n", "needs at least 32 bytes"),
        (None, "cannot read"),
    ],
)
def test_bad_secret_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(KeyFileError, match=message):
        KeySet(KeySources(secret_file=str(path)))


def test_bad_pem_files(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    signer = Signer.new("RS256")
    private = tmp_path / "private.pem"
    private.write_bytes(
        signer.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match="holds a private key"):
        KeySet(KeySources(public_key_files=(str(private),)))
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        KeySet(KeySources(public_key_files=(str(junk),)))
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match="ES256 needs a P-256 key"):
        KeySet(KeySources(public_key_files=(str(p384),)))
    small = tmp_path / "rsa1024.pem"
    small.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=1024)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match="shorter than 2048"):
        KeySet(KeySources(public_key_files=(str(small),)))


def test_bad_jwks_files(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    signer = Signer.new("ES256", kid="k")
    for document, message in [
        ({"nokeys": []}, "expected a JWKS object"),
        ({"keys": [signer.jwk(), signer.jwk()]}, "appears twice"),
        ({"keys": [{**signer.jwk(), "d": "x"}]}, "holds a private key"),
        ({"keys": [{**signer.jwk(), "alg": "RS256"}]}, "keys[0]"),
        ({"keys": []}, "no usable key"),
    ]:
        path.write_text(json.dumps(document))
        with pytest.raises(KeyFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
            KeySet(KeySources(jwks_file=str(path)))


def test_a_kid_is_matched_to_unnamed_keys_when_the_key_set_has_no_ids(tmp_path: Path) -> None:
    # Issuers that always set a kid, verified with a plain PEM file.
    signer = Signer.new("RS256")
    keys = keyset_for(tmp_path, signer)
    issued = Signer(signer.algorithm, signer.private, signer.public, kid="issuer-key-7")
    assert Verifier(keys).verify(issued.token()).user == "alice"
    other = Signer.new("RS256", kid="issuer-key-7")
    assert refusal(Verifier(keys), other.token()).reason == "bad signature"
