"""Finding the client's address behind trusted proxies."""

import ipaddress

import pytest

from siscom.core.peers import client_address

LOCAL = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "198.51.100.1, 203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "203.0.113.9, 10.1.2.3", "203.0.113.9"),
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "not-an-ip", "127.0.0.1"),
        ("127.0.0.1", "203.0.113.9, junk, 10.1.2.3", "10.1.2.3"),
        ("10.1.2.3", "10.4.5.6", "10.4.5.6"),
        (None, "203.0.113.9", "unknown"),
    ],
)
def test_trusted_proxies_vouch_for_the_address_before_them(remote, forwarded, expected):
    assert client_address(remote, forwarded, LOCAL) == expected


def test_an_untrusted_peer_cannot_claim_another_address():
    assert client_address("198.51.100.7", "127.0.0.1", LOCAL) == "198.51.100.7"


def test_without_trusted_proxies_the_header_is_ignored():
    assert client_address("127.0.0.1", "203.0.113.9", ()) == "127.0.0.1"
