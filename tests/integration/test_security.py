"""The stream's protections end to end: tokens, origins, connection limits, headers, no leaks.

A real server process under Hypercorn, the session broker over TCP, and WebSocket clients (or raw
sockets, where a client library would refuse to send what an attacker sends).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support import ServerProcess, collect, ws_client
from support.http import http_get_json
from support.kafka import produce
from support.status import stats as status_stats
from support.status import wait_ready, wait_stats
from websockets.exceptions import ConnectionClosed, InvalidStatus

SECRET = "integration-secret-" + uuid.uuid4().hex  # 51 characters, different every run
AUDIENCE = "fleet-stream"
ISSUER = "https://auth.fleet.test"
DASHBOARD = "https://fleet.example.com"


def mint(devices, *, expires_in: float = 300, key=SECRET, algorithm="HS256", **claims) -> str:
    claims = {"aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time() + expires_in), **claims}
    if devices is not None:
        claims["devices"] = devices
    return jwt.encode(claims, key, algorithm=algorithm)


def record(device_id: str, n: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": n}}).encode()


def fleet(count: int = 4) -> list[str]:
    """Device ids no other test uses, so that snapshots of earlier tests cannot show up."""
    prefix = uuid.uuid4().hex[:8]
    return [f"{prefix}-{n}" for n in range(count)]


def request(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET with headers; the status, the response headers (lower-case names) and the body."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def stats(server: ServerProcess) -> dict:
    """The counters, read with a token (the stats endpoint is behind the same auth as streams)."""
    return status_stats(server, {"Authorization": f"Bearer {mint([])}"})


async def wait_stats_authed(server: ServerProcess, predicate, timeout: float = 10.0) -> dict:
    """Poll the stats, with a token, until `predicate` accepts them."""
    return await wait_stats(server, predicate, timeout, headers={"Authorization": f"Bearer {mint([])}"})


async def wait_counter(server: ServerProcess, name: str, value: int) -> dict:
    return await wait_stats_authed(server, lambda body: body.get(name) == value)


def devices_of(frames: list[dict]) -> set[str]:
    return {frame["data"]["data"]["DEVICE_ID"] for frame in frames}


@pytest.fixture(scope="module")
def secured(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """One server that requires tokens (with audience and issuer) and one origin, for many tests."""
    return module_server_factory(
        "secured",
        STREAM_JWT_SECRET=SECRET,
        STREAM_JWT_AUDIENCE=AUDIENCE,
        STREAM_JWT_ISSUER=ISSUER,
        STREAM_ALLOWED_ORIGINS=DASHBOARD,
    )


@pytest.fixture(scope="module")
def open_server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """One server with the default settings, for the tests that only read what it answers."""
    return module_server_factory("open")


# -- tokens ----------------------------------------------------------------------------------------


def unsigned_token() -> str:
    """A token with ``alg: none``: well-formed, granting everything, signed by nobody."""
    claims = {"exp": int(time.time()) + 300, "devices": "*", "aud": AUDIENCE, "iss": ISSUER}
    return jwt.encode(claims, None, algorithm="none")


BAD_TOKENS = {
    "no token": (lambda: {}, "a token is required"),
    "malformed": (lambda: {"Authorization": "Bearer not.a.jwt"}, "malformed token"),
    "garbage": (lambda: {"Authorization": "Bearer %%%"}, "malformed token"),
    "wrong signature": (
        lambda: {"Authorization": f"Bearer {mint('*', key='another-secret-of-at-least-32-chars!')}"},
        "token signature not valid",
    ),
    "alg none": (lambda: {"Authorization": f"Bearer {unsigned_token()}"}, "token algorithm not accepted"),
    "expired": (lambda: {"Authorization": f"Bearer {mint('*', expires_in=-10)}"}, "token expired"),
    "not yet valid": (
        lambda: {"Authorization": f"Bearer {mint('*', nbf=int(time.time()) + 600)}"},
        "token not yet valid",
    ),
    "wrong audience": (lambda: {"Authorization": f"Bearer {mint('*', aud='billing')}"}, "token audience not accepted"),
    "wrong issuer": (
        lambda: {"Authorization": f"Bearer {mint('*', iss='https://evil.test')}"},
        "token issuer not accepted",
    ),
    "no devices claim": (lambda: {"Authorization": f"Bearer {mint(None)}"}, 'the token has no "devices" claim'),
    "basic auth": (
        lambda: {"Authorization": "Basic dXNlcjpwYXNz"},
        "the Authorization header must use the Bearer scheme",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_a_bad_token_gets_an_error_frame_then_close_1008(secured, case):
    headers, reason = BAD_TOKENS[case]
    before = (await asyncio.to_thread(stats, secured))["auth_failures"]
    async with ws_client(secured.ws_url(), additional_headers=headers()) as client:
        frame = await client.next_frame()
        assert frame["event"] == "error"
        assert frame["data"]["message"].startswith(reason)
        assert await client.wait_closed() == 1008
        assert client.close_reason == "not authenticated"
    await wait_counter(secured, "auth_failures", before + 1)


async def test_a_token_is_accepted_from_the_header_the_subprotocol_or_the_query(secured, broker):
    devices = fleet(1)
    token = mint(devices)
    carriers = [
        ws_client(secured.ws_url(), additional_headers={"Authorization": f"Bearer {token}"}),
        ws_client(secured.ws_url(), subprotocols=["bearer", token]),  # what a browser can do
        ws_client(secured.ws_url(f"/api/v1/stream?token={token}")),
    ]
    clients = [await carrier.__aenter__() for carrier in carriers]
    try:
        # The browser's handshake only succeeds if the server picks one of the offered protocols.
        assert clients[1].connection.subprotocol == "bearer"
        await wait_stats_authed(secured, lambda s: s["connections"] >= 3)
        await produce(broker.bootstrap, secured.topic, [record(devices[0], 1)])
        for client in clients:
            assert (await client.next_frame())["data"]["data"] == {"DEVICE_ID": devices[0], "SEQ": 1}
    finally:
        for carrier in reversed(carriers):
            await carrier.__aexit__(None, None, None)


async def test_without_device_ids_a_client_gets_exactly_the_devices_of_its_token(secured, broker):
    devices = fleet(4)
    granted = devices[:3]  # a dashboard that may see three vehicles
    token = mint(granted)
    async with ws_client(secured.ws_url(), additional_headers={"Authorization": f"Bearer {token}"}) as client:
        await wait_stats_authed(secured, lambda s: s["connections"] >= 1)
        await produce(broker.bootstrap, secured.topic, [record(device, n) for n in range(3) for device in devices])
        frames = await collect(client, 9)
        assert devices_of(frames) == set(granted)
        with pytest.raises(TimeoutError):
            await client.next_frame(0.3)


async def test_device_ids_outside_the_token_are_refused_with_an_error_frame_and_1008(secured):
    devices = fleet(4)
    token = mint(devices[:3])
    before = (await asyncio.to_thread(stats, secured))["forbidden_requests"]
    url = secured.ws_url(f"/api/v1/stream?device_ids={devices[0]},{devices[3]}")
    async with ws_client(url, additional_headers={"Authorization": f"Bearer {token}"}) as client:
        frame = await client.next_frame()
        assert frame == {
            "event": "error",
            "data": {"message": "device ids not allowed by the token", "device_ids": [devices[3]]},
        }
        assert await client.wait_closed() == 1008
    await wait_counter(secured, "forbidden_requests", before + 1)


async def test_a_subscription_change_outside_the_token_closes_the_stream_with_1008(secured):
    devices = fleet(4)
    token = mint(devices[:3])
    url = secured.ws_url(f"/api/v1/stream?device_ids={devices[0]}")
    async with ws_client(url, additional_headers={"Authorization": f"Bearer {token}"}) as client:
        await client.send(json.dumps({"action": "subscribe", "device_ids": [devices[1]]}))
        assert (await client.next_frame())["data"]["device_ids"] == sorted(devices[:2])
        await client.send(json.dumps({"action": "subscribe", "device_ids": [devices[3]]}))
        frame = await client.next_frame()
        assert frame["event"] == "error" and frame["data"]["device_ids"] == [devices[3]]
        assert await client.wait_closed() == 1008


async def test_a_star_token_grants_every_device(secured, broker):
    devices = fleet(3)
    async with ws_client(secured.ws_url(), additional_headers={"Authorization": f"Bearer {mint('*')}"}) as client:
        await wait_stats_authed(secured, lambda s: s["connections"] >= 1)
        await produce(broker.bootstrap, secured.topic, [record(device, 0) for device in devices])
        frames = await client.frames_until(lambda f: f["data"]["data"]["DEVICE_ID"] == devices[-1])
        assert set(devices) <= devices_of(frames)


async def test_the_stream_closes_with_1008_when_the_token_expires(secured):
    token = mint(fleet(1), expires_in=2)
    before = (await asyncio.to_thread(stats, secured))["token_expiries"]
    async with ws_client(secured.ws_url(), additional_headers={"Authorization": f"Bearer {token}"}) as client:
        # Less left than STREAM_TOKEN_NOTICE_SECONDS: the notice comes at once; unanswered, the end.
        notice = await client.next_frame(timeout=5)
        assert notice["event"] == "token-expiring" and notice["data"]["expires_in"] <= 2
        frame = await client.next_frame(timeout=5)
        assert frame == {"event": "error", "data": {"message": "token expired"}}
        assert await client.wait_closed() == 1008
        assert client.close_reason == "token expired"
    await wait_counter(secured, "token_expiries", before + 1)


def raw_handshake(server: ServerProcess, extra_headers: str) -> bytes:
    """Send a WebSocket handshake by hand; return what the server answered first."""
    head = (
        "GET /api/v1/stream HTTP/1.1\r\n"
        f"Host: {server.host}:{server.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra_headers}\r\n"
    ).encode()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        try:
            sock.sendall(head)
        except OSError:
            pass  # the server may stop reading once the head is too big; its answer still counts
        return sock.recv(65536)


async def test_a_token_in_a_huge_header_is_refused_cleanly(secured):
    # Past Hypercorn's header limits the handshake itself is refused: 431, nothing in the log.
    answer = await asyncio.to_thread(raw_handshake, secured, f"Authorization: Bearer {'A' * 200_000}\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    # A head Hypercorn still takes holds a token longer than any real one: refused unparsed.
    async with ws_client(secured.ws_url(), additional_headers={"Authorization": "Bearer " + "A" * 12_000}) as client:
        frame = await client.next_frame()
        assert frame["data"]["message"].startswith("token too long")
        assert await client.wait_closed() == 1008
    log = secured.log_text()
    assert "Traceback" not in log and "A" * 100 not in log


async def test_the_stats_need_a_token_but_health_and_ready_do_not(secured):
    status, headers, body = await asyncio.to_thread(request, f"{secured.url}/api/v1/stream/stats")
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body) == {"error": "a token is required"}
    status, _, body = await asyncio.to_thread(
        request, f"{secured.url}/api/v1/stream/stats", {"Authorization": f"Bearer {mint('*', expires_in=-10)}"}
    )
    assert (status, json.loads(body)) == (401, {"error": "token expired"})
    # A token that grants no device at all is enough to read the counters, and nothing more.
    status, _, body = await asyncio.to_thread(
        request, f"{secured.url}/api/v1/stream/stats", {"Authorization": f"Bearer {mint([])}"}
    )
    assert status == 200 and "connections" in json.loads(body)
    status, _, _ = await asyncio.to_thread(request, f"{secured.url}/api/v1/stream/stats?token={mint([])}")
    assert status == 200
    async with ws_client(secured.ws_url(), additional_headers={"Authorization": f"Bearer {mint([])}"}) as client:
        assert (await client.next_frame())["data"]["message"] == "the token grants no devices"
        assert await client.wait_closed() == 1008
    assert (await asyncio.to_thread(http_get_json, f"{secured.url}/health"))[0] == 200
    assert (await asyncio.to_thread(http_get_json, f"{secured.url}/ready"))[0] in (200, 503)


# -- origins ---------------------------------------------------------------------------------------


async def test_a_handshake_from_another_origin_is_refused_with_403_and_counted(secured):
    before = (await asyncio.to_thread(stats, secured))["origin_refusals"]
    with pytest.raises(InvalidStatus) as refused:
        async with ws_client(secured.ws_url(), origin="https://evil.example.com"):
            pass
    assert refused.value.response.status_code == 403
    assert not any(name.lower() == "server" for name in refused.value.response.headers)
    await wait_counter(secured, "origin_refusals", before + 1)
    # The dashboard's own origin, and clients that are not browsers (no Origin), get through.
    token = mint(fleet(1))
    for origin in (DASHBOARD, None):
        async with ws_client(
            secured.ws_url(), origin=origin, additional_headers={"Authorization": f"Bearer {token}"}
        ) as client:
            with pytest.raises(TimeoutError):
                await client.next_frame(0.2)
    assert (await asyncio.to_thread(stats, secured))["origin_refusals"] == before + 1


# -- nothing leaks ---------------------------------------------------------------------------------


async def test_tokens_and_the_secret_never_reach_the_logs_ready_or_stats(secured):
    tokens = [
        mint(fleet(1)),
        mint("*", expires_in=-5),
        mint("*", key="some-other-secret-that-is-32-chars-long"),
        mint([]),
    ]
    for token in tokens:
        for options in (
            {"additional_headers": {"Authorization": f"Bearer {token}"}},
            {"subprotocols": ["bearer", token]},
        ):
            async with ws_client(secured.ws_url(), **options) as client:
                try:
                    await client.next_frame(0.2)
                except (TimeoutError, ConnectionClosed):
                    pass
        async with ws_client(secured.ws_url(f"/api/v1/stream?device_ids=nope&token={token}")) as client:
            await client.wait_closed()
    answers = [
        (await asyncio.to_thread(request, f"{secured.url}{path}", {"Authorization": f"Bearer {tokens[-1]}"}))[2]
        for path in ("/ready", "/health", "/api/v1/stream/stats")
    ]
    text = secured.log_text() + "".join(answer.decode() for answer in answers)
    assert "Refusing stream" in text  # the log did record the refusals...
    for secret in [SECRET, *tokens, *(token.rsplit(".", 1)[1] for token in tokens)]:
        assert secret not in text  # ...but not what was refused


# -- a public key from a file ----------------------------------------------------------------------


async def test_es256_tokens_verify_against_a_public_key_file(make_server, broker, topic, tmp_path):
    private = ec.generate_private_key(ec.SECP256R1())
    key_file = Path(tmp_path / "jwt-public.pem")
    key_file.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    server = make_server(STREAM_JWT_PUBLIC_KEY=str(key_file))
    devices = fleet(2)
    good = jwt.encode({"exp": int(time.time()) + 300, "devices": devices[:1]}, private, algorithm="ES256")
    # The shared-secret kind of token, even a well-formed one, is not what this server takes.
    wrong_kind = jwt.encode({"exp": int(time.time()) + 300, "devices": "*"}, SECRET, algorithm="HS256")
    async with ws_client(server.ws_url(), additional_headers={"Authorization": f"Bearer {wrong_kind}"}) as client:
        assert (await client.next_frame())["data"]["message"] == "token algorithm not accepted"
        assert await client.wait_closed() == 1008
    await wait_ready(server)
    async with ws_client(server.ws_url(), subprotocols=["bearer", good]) as client:
        await produce(broker.bootstrap, topic, [record(devices[1], 0), record(devices[0], 1)])
        frame = await client.next_frame()
        assert frame["data"]["data"] == {"DEVICE_ID": devices[0], "SEQ": 1}


# -- connection limits -----------------------------------------------------------------------------


async def test_past_the_connection_limit_new_clients_are_closed_with_1013_and_counted(make_server):
    """A slot is given back when the route has sent its close frame, which can be a little after
    the session ended (what `connections` counts): under load, a client that came as soon as
    `connections` read 0 was refused. So the test waits for the slots the limit counts."""
    server = make_server(STREAM_MAX_CONNECTIONS="2")
    async with ws_client(server.ws_url()), ws_client(server.ws_url()):
        await wait_stats(server, lambda s: s["connections"] == 2 and s["connection_slots"] == 2)
        async with ws_client(server.ws_url()) as third:
            assert await third.wait_closed() == 1013
            assert third.close_reason == "server at its connection limit"
        await wait_stats(server, lambda s: s["connection_limit_refusals"] == 1)
    # Slots are given back when clients leave.
    await wait_stats(server, lambda s: s["connections"] == 0 and s["connection_slots"] == 0)
    async with ws_client(server.ws_url()) as again:
        with pytest.raises(TimeoutError):
            await again.next_frame(0.3)


async def test_past_the_per_address_limit_that_address_is_closed_with_1013(make_server):
    # Behind a trusted proxy, the client's address is the one the proxy forwarded.
    server = make_server(STREAM_MAX_CONNECTIONS_PER_IP="1", STREAM_TRUSTED_PROXIES="127.0.0.1")

    def from_address(address: str):
        return ws_client(server.ws_url(), additional_headers={"X-Forwarded-For": address})

    async with from_address("203.0.113.1"), from_address("203.0.113.2"):
        await wait_stats(server, lambda s: s["connections"] == 2)
        async with from_address("203.0.113.1") as second:
            assert await second.wait_closed() == 1013
            assert second.close_reason == "too many connections from this address"
    body = await wait_stats(server, lambda s: s["connection_limit_refusals"] == 1)
    assert body["connections_opened"] == 2


async def test_a_client_message_over_64_kib_closes_the_stream_with_1009(open_server):
    server = open_server
    async with ws_client(server.ws_url(), compression=None) as client:
        await client.send(json.dumps({"action": "subscribe", "device_ids": ["a"], "pad": "x" * 70_000}))
        assert await client.wait_closed() == 1009
    async with ws_client(server.ws_url(), compression=None) as client:
        await client.send(json.dumps({"action": "subscribe", "device_ids": ["a"], "pad": "x" * 60_000}))
        assert (await client.next_frame())["event"] == "ack"


# -- HTTP headers ----------------------------------------------------------------------------------


async def test_http_answers_name_no_server_and_carry_the_security_headers(open_server):
    server = open_server
    for path, no_store in (("/health", True), ("/ready", True), ("/api/v1/stream/stats", True), ("/", False)):
        status, headers, _ = await asyncio.to_thread(request, f"{server.url}{path}")
        assert status in (200, 503), path
        assert "server" not in headers, (path, headers)
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        if no_store:
            assert headers["cache-control"] == "no-store", path
    answer = await asyncio.to_thread(raw_handshake, server, "")
    assert answer.startswith(b"HTTP/1.1 101")
    assert b"\r\nserver:" not in answer.lower()
