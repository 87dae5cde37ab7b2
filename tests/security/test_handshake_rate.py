"""An optional limit on how fast one address may open streams (``STREAM_HANDSHAKES_PER_SECOND_PER_IP``).

Past its allowance an address's handshakes are answered 429 with ``Retry-After``, before the
upgrade: a refused handshake costs the server an HTTP answer, not a WebSocket and a session. The
address is the one the connection limits use: the peer, or what trusted proxies say.
"""

from __future__ import annotations

import asyncio
import time

from support import ws_client
from support.status import stats
from websockets.exceptions import InvalidStatus


async def _attempt(url: str, address: str) -> int:
    """Open and close one stream as ``address`` (through a trusted proxy); the HTTP status."""
    try:
        async with ws_client(url, additional_headers={"X-Forwarded-For": address}, open_timeout=5):
            return 101
    except InvalidStatus as error:
        assert error.response.headers.get("Retry-After") == "1"
        return error.response.status_code


async def test_handshakes_past_the_per_address_rate_are_refused_with_429_and_counted(make_server, scenario) -> None:
    scenario.title = "8. handshake rate per address"
    scenario.target = "burst + rate allowed, then 429; other addresses unaffected"
    server = make_server(
        STREAM_HANDSHAKES_PER_SECOND_PER_IP="2", STREAM_HANDSHAKE_BURST_PER_IP="5", STREAM_TRUSTED_PROXIES="127.0.0.1"
    )
    url = server.ws_url("/api/v1/stream?device_ids=nobody")
    started = time.monotonic()
    statuses = [await _attempt(url, "198.51.100.7") for _ in range(20)]
    elapsed = time.monotonic() - started
    other = await _attempt(url, "198.51.100.8")
    await asyncio.sleep(0.6)  # one more token for the first address
    again = await _attempt(url, "198.51.100.7")
    accepted = statuses.count(101)
    scenario.figure("20 handshakes at once from one address", f"{accepted} accepted, {statuses.count(429)} got 429")
    scenario.figure("another address meanwhile", other)
    scenario.figure("the first address after 0.6 s", again)
    body = stats(server)
    scenario.figure("handshake_rate_refusals", body["handshake_rate_refusals"])
    assert statuses[:5] == [101] * 5 and set(statuses) == {101, 429}
    assert accepted <= 5 + int(elapsed * 2) + 1
    assert other == 101 and again == 101
    assert body["handshake_rate_refusals"] == statuses.count(429)
    assert body["connections_opened"] == accepted + 2  # refused handshakes never became streams


async def test_without_a_handshake_rate_every_handshake_is_accepted(make_server) -> None:
    server = make_server()  # off by default
    url = server.ws_url("/api/v1/stream?device_ids=nobody")
    statuses = [await _attempt(url, "198.51.100.9") for _ in range(30)]
    assert statuses == [101] * 30
