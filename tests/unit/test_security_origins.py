"""The Origin check: listed origins pass, others do not, and '*' must be said explicitly."""

from __future__ import annotations

import pytest

from siscom.security.origins import OriginPolicy, normalize_origin


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("https://Fleet.Example.COM", "https://fleet.example.com"),
        ("https://fleet.example.com:443", "https://fleet.example.com"),
        ("http://fleet.example.com:80/", "http://fleet.example.com"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_origins_compare_in_one_spelling(text, origin):
    assert normalize_origin(text) == origin


@pytest.mark.parametrize(
    "text",
    ["null", "fleet.example.com", "file:///x", "https://x/path", "https://x?q=1", "https://a:b@x", "http://x:99999"],
)
def test_anything_but_a_bare_http_origin_is_not_an_origin(text):
    with pytest.raises(ValueError):
        normalize_origin(text)


def test_a_listed_origin_passes_and_others_do_not():
    policy = OriginPolicy(["https://fleet.example.com", "http://127.0.0.1:8000"])
    assert policy.allows("https://fleet.example.com")
    assert policy.allows("HTTPS://FLEET.EXAMPLE.COM:443")
    assert policy.allows("http://127.0.0.1:8000")
    assert not policy.allows("https://evil.example.com")
    assert not policy.allows("http://fleet.example.com")  # another scheme is another origin
    assert not policy.allows("https://fleet.example.com.evil.com")
    assert not policy.allows("http://127.0.0.1:8001")
    assert not policy.allows("null")
    assert not policy.allows("")


def test_a_handshake_without_an_origin_is_not_from_a_browser_and_passes():
    assert OriginPolicy(["https://fleet.example.com"]).allows(None)


def test_star_allows_every_origin():
    policy = OriginPolicy(["*"])
    assert policy.any
    assert policy.allows("https://anything.example") and policy.allows("null")
