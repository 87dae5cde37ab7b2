"""The gateway's answer to a permessage-deflate offer (RFC 7692 section 7), offer by offer."""

from __future__ import annotations

import pytest

from siscom.web.server.deflate import agree


def answer(header: str) -> str | None:
    agreement = agree([offer.strip() for offer in header.split(",")])
    return None if agreement is None else agreement.header.decode()


@pytest.mark.parametrize(
    ("offer", "expected"),
    [
        # Chromium's and Firefox's offer: accepted, with nothing to answer.
        ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
        ("permessage-deflate", "permessage-deflate"),
        # What the client asks of the server is answered; the client's own window stays its own.
        (
            'permessage-deflate; server_no_context_takeover; server_max_window_bits="10"',
            "permessage-deflate; server_max_window_bits=10; server_no_context_takeover",
        ),
        ("permessage-deflate; client_no_context_takeover", "permessage-deflate; client_no_context_takeover"),
        ("permessage-deflate; client_max_window_bits=9", "permessage-deflate"),
        # An offer that cannot be met (zlib has no 2^8 window) gives way to the next one.
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate", "permessage-deflate"),
    ],
)
def test_an_acceptable_offer_is_answered_with_what_it_binds_the_server_to(offer, expected):
    assert answer(offer) == expected


@pytest.mark.parametrize(
    "offer",
    [
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits",  # a value is required
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=010",  # no leading zero
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; unknown_parameter",
    ],
)
def test_an_offer_with_a_parameter_unknown_repeated_or_invalid_is_declined(offer):
    assert answer(offer) is None


def test_the_window_agreed_bounds_the_compression():
    agreement = agree(["permessage-deflate; server_max_window_bits=11; client_no_context_takeover"])
    assert agreement is not None
    assert (agreement.server_max_window_bits, agreement.client_no_context_takeover) == (11, True)
    assert agree(["permessage-deflate"]).server_max_window_bits == 15  # type: ignore[union-attr]
