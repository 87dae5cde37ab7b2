"""Token refresh on a live stream: a real server under Hypercorn, real JWTs, a real WebSocket client.

Dashboards hand out short-lived tokens; a stream that had to reconnect every few minutes to
change its token would lose what arrives in between. The server warns the client before its
token expires (``token-expiring``), the client sends a new one (``refresh``), and the stream goes
on; a new token that no longer grants what the stream watches is refused and the old expiry
stands.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable

import jwt
import pytest
from support import ServerProcess, produce, ws_client
from support.status import stats as status_stats
from support.status import wait_ready, wait_stats

SECRET = "refresh-secret-" + uuid.uuid4().hex  # 47 characters, different every run
NOTICE_SECONDS = 2


def mint(devices, expires_in: float) -> str:
    return jwt.encode({"devices": devices, "exp": int(time.time() + expires_in)}, SECRET, algorithm="HS256")


def expiry_of(token: str) -> int:
    return jwt.decode(token, options={"verify_signature": False})["exp"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fleet(count: int) -> list[str]:
    prefix = uuid.uuid4().hex[:8]
    return [f"{prefix}-{n}" for n in range(count)]


def record(device_id: str, n: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": n}}).encode()


def refresh_frame(token: str) -> str:
    return json.dumps({"action": "refresh", "token": token})


async def counters(server: ServerProcess) -> dict:
    return await asyncio.to_thread(status_stats, server, auth(mint([], 60)))


async def wait_counter(server: ServerProcess, name: str, value: int) -> None:
    await wait_stats(server, lambda body: body.get(name) == value, 10.0, headers=auth(mint([], 60)))


@pytest.fixture(scope="module")
def server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server that requires tokens and warns NOTICE_SECONDS before they expire."""
    server = module_server_factory("refresh", STREAM_JWT_SECRET=SECRET, STREAM_TOKEN_NOTICE_SECONDS=str(NOTICE_SECONDS))
    asyncio.run(wait_ready(server))
    return server


async def test_a_5_second_token_refreshed_three_times_keeps_the_stream(server, broker):
    devices = fleet(1)
    before = (await counters(server))["token_refreshes"]
    first = mint(devices, 5)
    async with ws_client(server.ws_url(), additional_headers=auth(first)) as client:
        token = first
        for _ in range(3):
            notice = await client.next_frame(timeout=8)
            assert notice["event"] == "token-expiring"
            left = expiry_of(token) - time.time()
            assert 0 <= notice["data"]["expires_in"] <= NOTICE_SECONDS and left <= NOTICE_SECONDS + 0.5
            token = mint(devices, 5)
            await client.send(refresh_frame(token))
            assert await client.next_frame() == {
                "event": "ack",
                "data": {"action": "refresh", "expires_at": expiry_of(token)},
            }
        # Past the first token's expiry, records still arrive on the same connection.
        assert time.time() > expiry_of(first) + 1
        await produce(broker.bootstrap, server.topic, [record(devices[0], 1)])
        frame = await client.next_frame(timeout=5)
        assert frame["event"] == "message" and frame["data"]["data"]["SEQ"] == 1
        # Unrefreshed, the last token still ends the stream, when it expires.
        frames = await client.frames_until(lambda frame: frame["event"] == "error", timeout=8)
        assert [frame["event"] for frame in frames] == ["token-expiring", "error"]
        assert frames[-1]["data"] == {"message": "token expired"}
        assert await client.wait_closed() == 1008
        assert time.time() >= expiry_of(token) - 0.2
    await wait_counter(server, "token_refreshes", before + 3)


async def test_a_refresh_with_a_narrower_token_is_refused_and_the_stream_ends_at_the_old_expiry(server, broker):
    devices = fleet(2)
    before = await counters(server)
    token = mint(devices, 4)
    async with ws_client(server.ws_url(), additional_headers=auth(token)) as client:
        assert (await client.next_frame(timeout=6))["event"] == "token-expiring"
        await client.send(refresh_frame(mint(devices[:1], 300)))  # valid, long, but one device short
        refusal = await client.next_frame()
        assert refusal == {
            "event": "error",
            "data": {
                "message": "token refresh refused: device ids not allowed by the token",
                "device_ids": [devices[1]],
            },
        }
        # Refused, but not closed: the stream goes on until the old expiry, then ends.
        await produce(broker.bootstrap, server.topic, [record(devices[1], 7)])
        frame = await client.next_frame(timeout=5)
        assert frame["event"] == "message" and frame["data"]["data"]["SEQ"] == 7
        assert await client.next_frame(timeout=6) == {"event": "error", "data": {"message": "token expired"}}
        ended = time.time()
        assert await client.wait_closed() == 1008
    assert expiry_of(token) - 0.2 <= ended <= expiry_of(token) + 2.0
    await wait_counter(server, "token_refresh_refusals", before["token_refresh_refusals"] + 1)
    await wait_counter(server, "token_expiries", before["token_expiries"] + 1)


async def test_a_refresh_to_a_token_already_inside_the_notice_time_brings_no_new_notice(server):
    """Otherwise a client handing back the same token would be told again at once, in a loop."""
    devices = fleet(1)
    token = mint(devices, 4)
    async with ws_client(server.ws_url(), additional_headers=auth(token)) as client:
        assert (await client.next_frame(timeout=6))["event"] == "token-expiring"
        await client.send(refresh_frame(token))
        assert (await client.next_frame())["data"] == {"action": "refresh", "expires_at": expiry_of(token)}
        assert await client.next_frame(timeout=6) == {"event": "error", "data": {"message": "token expired"}}
        assert await client.wait_closed() == 1008


@pytest.fixture(scope="module")
def quiet_server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server that requires tokens and logs at INFO, as operators run it."""
    server = module_server_factory("refresh-quiet", STREAM_JWT_SECRET=SECRET, LOG_LEVEL="INFO")
    asyncio.run(wait_ready(server))
    return server


async def test_refreshes_within_the_allowance_are_counted_and_write_no_line_at_info(quiet_server):
    """A refresh is a client's routine action: at INFO, a thousand clients refreshing every few
    minutes must not fill the log; the counters say how many there were."""
    server = quiet_server
    devices = fleet(2)
    before = await counters(server)
    async with ws_client(server.ws_url(), additional_headers=auth(mint(devices, 300))) as client:
        await wait_stats(server, lambda body: body["connections"] == 1, 10.0, headers=auth(mint([], 60)))
        logged = server.log_path.stat().st_size
        for n in range(40):  # within the default burst of 50 messages
            await client.send(refresh_frame(mint(devices, 300 + n)))
        for _ in range(5):
            await client.send(refresh_frame(mint(devices[:1], 300)))  # one device short: refused
        answers = [(await client.next_frame())["event"] for _ in range(45)]
        assert answers == ["ack"] * 40 + ["error"] * 5
        await wait_counter(server, "token_refreshes", before["token_refreshes"] + 40)
        await wait_counter(server, "token_refresh_refusals", before["token_refresh_refusals"] + 5)
        written = server.log_path.read_bytes()[logged:].decode(errors="replace")
    assert "refresh" not in written.lower(), written
