"""Token verification: what a JWT grants, and every way a bad one is refused without leaking it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from siscom.security.keys import load_public_key, read_public_key_text
from siscom.security.tokens import (
    MAX_TOKEN_CHARS,
    Forbidden,
    Grant,
    TokenError,
    TokenVerifier,
    bearer_token,
    find_token,
)

SECRET = "unit-test-secret-of-forty-characters-xyz"
THREE = ["bus-1", "bus-2", "bus-3"]


def mint(key=SECRET, algorithm="HS256", headers=None, **claims) -> str:
    claims.setdefault("exp", int(time.time()) + 300)
    claims.setdefault("devices", THREE)
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict, claims: dict, sign=lambda signing_input: b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def refusal(verifier: TokenVerifier, token: str | None) -> str:
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    error = caught.value
    if token:
        # The reason is for the client and the log: never the token, nor a piece of its signature.
        assert token not in str(error) and token not in error.frame()
        signature = token.rsplit(".", 1)[-1]
        if len(signature) >= 16:
            assert signature[:16] not in error.frame()
    return error.message


@pytest.fixture
def hs256() -> TokenVerifier:
    return TokenVerifier(SECRET.encode(), "HS256")


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


# -- what a good token grants ----------------------------------------------------------------------


def test_a_valid_token_grants_its_devices_until_its_expiry(hs256):
    expires = int(time.time()) + 120
    grant = hs256.verify(mint(exp=expires, sub="dashboard-7"))
    assert grant == Grant(devices=frozenset(THREE), expires_at=expires, subject="dashboard-7")


def test_devices_star_grants_every_device(hs256):
    assert hs256.verify(mint(devices="*")).devices is None


def test_an_empty_device_list_is_a_valid_token_that_grants_no_device(hs256):
    grant = hs256.verify(mint(devices=[]))
    assert grant.devices == frozenset()
    with pytest.raises(Forbidden, match="grants no devices"):
        grant.narrow(None)


def test_no_device_ids_means_all_the_devices_of_the_token():
    grant = Grant(devices=frozenset(THREE), expires_at=0)
    assert grant.narrow(None) == frozenset(THREE)
    assert grant.narrow(frozenset({"bus-2"})) == frozenset({"bus-2"})


def test_a_request_outside_the_grant_is_forbidden_and_names_the_outsiders():
    grant = Grant(devices=frozenset(THREE), expires_at=0)
    with pytest.raises(Forbidden) as caught:
        grant.narrow(frozenset({"bus-1", "bus-9", "car-4"}))
    assert caught.value.detail == {"device_ids": ["bus-9", "car-4"]}


def test_an_all_devices_grant_passes_any_request_through():
    grant = Grant(devices=None, expires_at=0)
    assert grant.narrow(None) is None
    assert grant.narrow(frozenset({"x"})) == frozenset({"x"})


# -- bad tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""])
def test_no_token_is_refused(hs256, token):
    assert refusal(hs256, token) == "a token is required"


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "a.b.c",
        "a.b",
        "....",
        "eyJhbGciOiJIUzI1NiJ9.not base64!.sig",
        b64(b"[1, 2]") + "." + b64(b"{}") + ".",  # header is not an object
        b64(b'{"alg": "HS256"}') + "." + b64(b"not json") + "." + b64(b"x"),
    ],
)
def test_malformed_tokens_are_refused(hs256, token):
    assert refusal(hs256, token) in {"malformed token", "token signature not valid"}


def test_a_token_signed_with_another_secret_is_refused(hs256):
    assert refusal(hs256, mint(key="another-secret-that-is-long-enough-too")) == "token signature not valid"


def test_a_token_whose_claims_were_changed_is_refused(hs256):
    header, _, signature = mint().split(".")
    forged = b64(json.dumps({"exp": int(time.time()) + 300, "devices": "*"}).encode())
    assert refusal(hs256, f"{header}.{forged}.{signature}") == "token signature not valid"


def test_alg_none_is_refused(hs256):
    unsigned = hand_made({"alg": "none", "typ": "JWT"}, {"exp": int(time.time()) + 300, "devices": "*"})
    assert refusal(hs256, unsigned) == "token algorithm not accepted"
    assert refusal(hs256, jwt.encode({"exp": int(time.time()) + 300, "devices": "*"}, None, algorithm="none")) == (
        "token algorithm not accepted"
    )


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_only_the_configured_algorithm_is_accepted(hs256):
    # Same secret, stronger hash: still not what the operator configured.
    assert refusal(hs256, mint(algorithm="HS512")) == "token algorithm not accepted"


def test_an_rs256_verifier_refuses_hs256_tokens_signed_with_its_public_key(rsa_key):
    """Algorithm confusion: the public key is public, so it must never work as an HMAC secret."""
    pem = public_pem(rsa_key)
    verifier = TokenVerifier(*load_public_key(pem))
    claims = {"exp": int(time.time()) + 300, "devices": "*"}
    sign = lambda data: hmac.new(pem.encode(), data, hashlib.sha256).digest()  # noqa: E731
    assert refusal(verifier, hand_made({"alg": "HS256", "typ": "JWT"}, claims, sign)) == "token algorithm not accepted"


def test_an_expired_token_is_refused(hs256):
    assert refusal(hs256, mint(exp=int(time.time()) - 5)) == "token expired"


def test_a_token_not_yet_valid_is_refused(hs256):
    assert refusal(hs256, mint(nbf=int(time.time()) + 60)) == "token not yet valid"


def test_a_token_without_exp_is_refused(hs256):
    token = jwt.encode({"devices": THREE}, SECRET, algorithm="HS256")
    assert refusal(hs256, token) == 'the token has no "exp" claim'


def test_an_exp_that_is_not_a_number_is_refused(hs256):
    assert refusal(hs256, mint(exp="tomorrow")) == "malformed token"


def test_audience_is_required_and_must_match_when_configured():
    verifier = TokenVerifier(SECRET.encode(), "HS256", audience="fleet-stream")
    assert verifier.verify(mint(aud="fleet-stream")).devices == frozenset(THREE)
    assert verifier.verify(mint(aud=["billing", "fleet-stream"])).devices == frozenset(THREE)
    assert refusal(verifier, mint(aud="billing")) == "token audience not accepted"
    assert refusal(verifier, mint()) == 'the token has no "aud" claim'


def test_a_token_meant_for_an_audience_is_refused_when_none_is_configured(hs256):
    assert refusal(hs256, mint(aud="someone-else")) == "token audience not accepted"


def test_issuer_is_required_and_must_match_when_configured():
    verifier = TokenVerifier(SECRET.encode(), "HS256", issuer="https://auth.example.com")
    assert verifier.verify(mint(iss="https://auth.example.com")).devices == frozenset(THREE)
    assert refusal(verifier, mint(iss="https://evil.example.com")) == "token issuer not accepted"
    assert refusal(verifier, mint()) == 'the token has no "iss" claim'


@pytest.mark.parametrize(
    ("devices", "reason"),
    [
        (None, 'the token has no "devices" claim (a list of device ids, or "*")'),
        ("bus-1", 'the token\'s "devices" claim must be "*" or a list of device ids'),
        ("**", 'the token\'s "devices" claim must be "*" or a list of device ids'),
        (["bus-1", 7], 'the token\'s "devices" claim must be "*" or a list of device ids'),
        (["bus 1"], 'the token\'s "devices" claim must be "*" or a list of device ids'),
        ({"bus-1": True}, 'the token\'s "devices" claim must be "*" or a list of device ids'),
    ],
)
def test_a_devices_claim_that_is_absent_or_not_a_list_of_ids_is_refused(hs256, devices, reason):
    claims = {"exp": int(time.time()) + 300}
    if devices is not None:
        claims["devices"] = devices
    assert refusal(hs256, jwt.encode(claims, SECRET, algorithm="HS256")) == reason


def test_an_overlong_token_is_refused_before_it_is_parsed(hs256):
    token = mint(devices=[f"d{n}" for n in range(2000)])
    assert len(token) > MAX_TOKEN_CHARS
    assert refusal(hs256, token).startswith("token too long")


# -- public keys -----------------------------------------------------------------------------------


def test_rs256_and_es256_tokens_verify_against_their_public_keys(rsa_key, ec_key):
    for private_key, algorithm in ((rsa_key, "RS256"), (ec_key, "ES256")):
        verifier = TokenVerifier(*load_public_key(public_pem(private_key)))
        assert verifier.algorithm == algorithm
        assert verifier.verify(mint(key=private_key, algorithm=algorithm, devices="*")).devices is None


def test_a_token_signed_by_another_private_key_is_refused(ec_key):
    verifier = TokenVerifier(*load_public_key(public_pem(ec_key)))
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert refusal(verifier, mint(key=stranger, algorithm="ES256")) == "token signature not valid"


def test_weak_or_unsupported_public_keys_are_refused():
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="1024 bits"):
        load_public_key(public_pem(small_rsa))
    with pytest.raises(ValueError, match="P-256"):
        load_public_key(public_pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(ValueError, match="not a PEM public key"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_a_public_key_is_read_from_pem_text_escaped_text_or_a_file(ec_key, tmp_path):
    pem = public_pem(ec_key)
    path = tmp_path / "jwt.pem"
    path.write_text(pem)
    assert read_public_key_text(pem).strip() == pem.strip()
    assert read_public_key_text(pem.strip().replace("\n", "\\n")).strip() == pem.strip()
    assert read_public_key_text(str(path)) == pem
    with pytest.raises(ValueError):
        read_public_key_text(str(tmp_path / "missing.pem"))


def test_the_verifier_repr_shows_no_key():
    assert SECRET not in repr(TokenVerifier(SECRET.encode(), "HS256"))


# -- where tokens are found ------------------------------------------------------------------------


def test_a_token_is_found_in_the_header_then_the_subprotocol_then_the_query():
    assert find_token("Bearer h.h.h", ["bearer", "s.s.s"], "q.q.q") == "h.h.h"
    assert find_token("bearer  h.h.h ", [], None) == "h.h.h"
    assert find_token(None, ["bearer", "s.s.s"], "q.q.q") == "s.s.s"
    assert find_token(None, ["chat", "bearer", "s.s.s"], None) == "s.s.s"
    assert find_token(None, ["bearer"], "q.q.q") == "q.q.q"
    assert find_token(None, [], "q.q.q") == "q.q.q"
    assert find_token(None, [], None) is None
    assert find_token(None, [], "") is None


def test_an_authorization_header_with_another_scheme_is_refused():
    with pytest.raises(TokenError, match="Bearer scheme"):
        bearer_token("Basic dXNlcjpwYXNz")
    assert bearer_token("Bearer") is None
    assert bearer_token(None) is None
