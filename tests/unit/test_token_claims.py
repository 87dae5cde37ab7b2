"""Property tests: a correctly signed token whose claims hold any JSON value is granted or refused.

A token's signature proves who minted it, not that its claims are sane: a backend bug (or a leaked
secret) can sign ``"exp": 10**400``, ``NaN`` or a nested list. Whatever the claims hold, verifying
must end in a :class:`Grant` or a :class:`TokenError` (an error frame and 1008 for the client,
counted as an auth failure), never in another exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siscom.security.tokens import MAX_NUMERIC_DATE, Grant, TokenError, TokenVerifier

SECRET = "unit-test-secret-of-forty-characters-xyz"
VERIFIER = TokenVerifier(SECRET.encode(), "HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(claims: dict | str) -> str:
    """HS256 over claims serialized by hand: ``json.dumps`` writes NaN, Infinity and huge ints.

    ``claims`` may also be the payload's JSON text, for nesting deeper than ``json`` encodes.
    """
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64((claims if isinstance(claims, str) else json.dumps(claims)).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**450),
    st.integers(max_value=-(10**300), min_value=-(10**450)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 2**63, 2**64, 10**400, MAX_NUMERIC_DATE + 1]),
    st.text(max_size=20),
    st.sampled_from(["*", "1e400", "9999999999", "NaN", "", "bus-1"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


def outcome(claims: dict | str) -> Grant | TokenError:
    try:
        return VERIFIER.verify(signed(claims))
    except TokenError as error:
        return error


def check(result: Grant | TokenError) -> None:
    if isinstance(result, Grant):
        # Only a finite number within range is an expiry a timer can be set for.
        assert math.isfinite(result.expires_at) and abs(result.expires_at) <= MAX_NUMERIC_DATE


def _soon() -> int:
    return int(time.time()) + 300


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exp=values)
def test_any_expiry_value_is_granted_or_refused_with_a_token_error(exp) -> None:
    check(outcome({"exp": exp, "devices": "*"}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nbf=values)
def test_any_not_before_value_is_granted_or_refused_with_a_token_error(nbf) -> None:
    check(outcome({"exp": _soon(), "nbf": nbf, "devices": "*"}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(devices=values)
def test_any_devices_value_is_granted_or_refused_with_a_token_error(devices) -> None:
    result = outcome({"exp": _soon(), "devices": devices})
    if isinstance(result, Grant):
        assert result.devices is None or all(isinstance(item, str) for item in result.devices)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exp=values, nbf=values, devices=values)
def test_any_combination_of_claim_values_is_granted_or_refused_with_a_token_error(exp, nbf, devices) -> None:
    check(outcome({"exp": exp, "nbf": nbf, "devices": devices}))


@given(exp=st.one_of(st.integers(min_value=MAX_NUMERIC_DATE + 1), st.sampled_from([math.inf, math.nan])))
def test_an_expiry_no_clock_reaches_is_refused(exp) -> None:
    result = outcome({"exp": exp, "devices": "*"})
    assert isinstance(result, TokenError)


def test_an_expiry_of_ten_to_the_400_is_refused_as_out_of_range() -> None:
    result = outcome({"exp": 10**400, "devices": "*"})
    assert isinstance(result, TokenError) and "out of range" in result.message


def test_a_string_expiry_is_refused_even_when_it_reads_as_a_number() -> None:
    result = outcome({"exp": str(int(time.time()) + 300), "devices": "*"})
    assert isinstance(result, TokenError) and "number of seconds" in result.message


@given(depth=st.integers(min_value=2, max_value=3000))
@settings(max_examples=30, deadline=None)
def test_deeply_nested_device_claims_are_refused(depth) -> None:
    nested = "[" * depth + "]" * depth
    result = outcome(f'{{"exp":{int(time.time()) + 300},"devices":{nested}}}')
    assert isinstance(result, TokenError)


def test_a_sane_token_is_still_granted() -> None:
    grant = VERIFIER.verify(signed({"exp": int(time.time()) + 300, "nbf": 0, "devices": ["bus-1"]}))
    assert grant.devices == frozenset({"bus-1"})
