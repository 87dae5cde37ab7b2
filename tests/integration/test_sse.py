"""The stream over Server-Sent Events, end to end: a real broker, the app under Hypercorn, and a raw
HTTP client on a real socket that reads the wire byte for byte (not a browser)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import jwt
import pytest
from support.kafka import produce
from support.sse import open_sse, sse_client
from support.status import wait_ready, wait_stats

from siscom.core.protocol import CloseCode


def record(device_id: str, n: int, **extra) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": n, **extra}, "uuid": f"{device_id}-{n}"}).encode()


def stream_url(server, query: str = "") -> str:
    return f"{server.url}/api/v1/stream" + (f"?{query}" if query else "")


# Servers shared by the tests of this module that only read what a server serves: each test uses
# devices of its own, counts from where the counters stood, and starts once the streams of the
# test before it have ended (``settled``).


@pytest.fixture(scope="module")
def default_server(module_server_factory):
    return module_server_factory("sse-default")


@pytest.fixture(scope="module")
def unsnapshotted_server(module_server_factory):
    return module_server_factory("sse-no-snapshot", STREAM_SNAPSHOT="false")


@pytest.fixture(scope="module")
def origins_server(module_server_factory):
    return module_server_factory("sse-origins", STREAM_ALLOWED_ORIGINS=DASHBOARD)


async def settled(server):
    """``server`` once ready and with no stream open (the last test's have ended)."""
    await wait_ready(server)
    await wait_stats(server, lambda s: s["connections"] == 0 and s["devices_subscribed"] == 0)
    return server


async def test_an_event_stream_is_the_retry_field_then_each_frame_as_one_event_byte_for_byte(
    make_server, broker, topic
):
    server = make_server(STREAM_SSE_RETRY_MILLISECONDS="1500")
    await wait_ready(server)
    values = [record(f"dev-{n % 3}", n) for n in range(10)]
    values.append(b'{"data": {"DEVICE_ID": "spaced",   "x": [1, 2.50, "\\u00e9"]}}')
    async with sse_client(stream_url(server)) as client:
        assert client.status == 200
        headers = client.headers
        assert headers["content-type"] == "text/event-stream"
        assert headers["cache-control"] == "no-store"
        assert headers["x-accel-buffering"] == "no"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert "content-security-policy" in headers
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, topic, values)
        events = [await client.next_event() for _ in values]
    assert bytes(client.body).startswith(b"retry: 1500\n\n")
    assert client.parser.retry == 1500
    for event, value in zip(events, values):
        cursor = json.loads(event.data)["id"]
        frame = '{"event":"message","id":"' + cursor + '","data":' + value.decode() + "}"
        # No event field: EventSource.onmessage gets every frame, whose text is the WebSocket frame's.
        assert event.raw == b"id: " + cursor.encode() + b"\ndata: " + frame.encode() + b"\n\n"
        assert event.id == cursor
        assert json.loads(event.data)["data"] == json.loads(value)
    # Nothing but the retry field and the events: the body is exactly their concatenation.
    assert bytes(client.body) == b"retry: 1500\n\n" + b"".join(event.raw for event in events)


async def test_keep_alive_pings_are_events_with_the_current_cursor_as_id(make_server, broker, topic):
    server = make_server(STREAM_KEEPALIVE_SECONDS="0.5", STREAM_SNAPSHOT="false")
    await wait_ready(server)
    async with sse_client(stream_url(server, "device_ids=pinged")) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, topic, [record("pinged", 1)])
        message = await client.next_event()
        ping = await client.next_event(3, skip_pings=False)
    frame = json.loads(ping.data)
    assert frame["event"] == "ping"
    # Nothing else was routed since the message: an idle client's Last-Event-ID stays where it was.
    assert ping.id == message.id == frame["id"]
    assert ping.raw == b"id: " + message.id.encode() + b"\ndata: " + ping.data.encode() + b"\n\n"
    assert client.parser.last_event_id == message.id


async def test_last_event_id_resumes_exactly_what_was_missed_then_live(make_server, broker, topic):
    server = make_server(STREAM_SNAPSHOT="false")
    await wait_ready(server)
    await produce(broker.bootstrap, topic, [record("other", 0)])  # every partition has a cursor
    async with sse_client(stream_url(server, "device_ids=bus-1")) as first:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, topic, [record("bus-1", n) for n in range(5)])
        seen = [await first.next_event() for _ in range(5)]
        last = first.parser.last_event_id
    await wait_stats(server, lambda s: s["connections"] == 0)
    await produce(broker.bootstrap, topic, [record("bus-1", n) for n in range(5, 12)] + [record("other", 1)])
    # What EventSource sends when it reconnects; the URL's own cursor (stale) and since lose to it.
    url = stream_url(server, f"device_ids=bus-1&cursor={seen[0].id}&since=0")
    async with sse_client(url, {"Last-Event-ID": last}) as again:
        assert again.status == 200
        resumed = await again.next_frame()
        missed = [json.loads((await again.next_event()).data) for _ in range(7)]
        await produce(broker.bootstrap, topic, [record("bus-1", 12)])
        live = await again.next_frame()
    assert resumed == {"event": "resumed", "data": {"recovered": True}}
    assert [f["data"]["data"]["SEQ"] for f in seen_frames(seen)] == list(range(5))
    assert [f["data"]["data"]["SEQ"] for f in missed] == list(range(5, 12))
    assert live["data"]["data"]["SEQ"] == 12


def seen_frames(events):
    return [json.loads(event.data) for event in events]


async def test_a_get_that_asks_for_no_event_stream_gets_406_saying_how_to_ask(default_server):
    server = default_server
    async with sse_client(stream_url(server), {"Accept": "*/*"}) as client:
        body = json.loads(await client.read_body())
    assert client.status == 406
    assert client.headers["content-type"] == "application/json"
    assert "text/event-stream" in body["error"]


async def test_bad_queries_cursors_and_times_get_400_with_a_json_error_and_are_counted(make_server):
    server = make_server(STREAM_REPLAY_MAX_SECONDS="60")
    await wait_ready(server)
    cases = [
        ("device_ids=bad%20id", {}, "invalid device id"),
        ("cursor=garbage", {}, "malformed cursor"),
        ("", {"Last-Event-ID": "garbage"}, "malformed cursor"),
        ("since=2001-01-01T00:00:00Z", {}, "STREAM_REPLAY_MAX_SECONDS"),
        ("since=yesterday", {}, "since must be"),
        ("max_hz=-1", {}, "max_hz"),
    ]
    for query, headers, expected in cases:
        async with sse_client(stream_url(server, query), headers) as client:
            body = json.loads(await client.read_body())
        assert client.status == 400, (query, body)
        assert client.headers["content-type"] == "application/json"
        assert client.headers["x-content-type-options"] == "nosniff"
        assert expected in body["error"], (query, body)
    counters = await wait_stats(server, lambda s: s["rejected_requests"] == len(cases))
    assert counters["connections_opened"] == 0 and counters["connections"] == 0


async def test_over_the_connection_limit_the_answer_is_503_with_retry_after(make_server):
    server = make_server(STREAM_MAX_CONNECTIONS="1", STREAM_SSE_RETRY_MILLISECONDS="2500")
    await wait_ready(server)
    async with sse_client(stream_url(server)) as first:
        assert first.status == 200
        await wait_stats(server, lambda s: s["connections"] == 1)
        async with sse_client(stream_url(server)) as second:
            body = json.loads(await second.read_body())
        assert second.status == 503
        assert second.headers["retry-after"] == "3"  # the retry delay, in whole seconds
        assert body == {"error": "server at its connection limit"}
    counters = await wait_stats(server, lambda s: s["connections"] == 0)
    assert counters["connection_limit_refusals"] == 1


async def test_over_the_handshake_rate_the_answer_is_429_with_retry_after(make_server):
    server = make_server(STREAM_HANDSHAKES_PER_SECOND_PER_IP="0.5", STREAM_HANDSHAKE_BURST_PER_IP="1")
    await wait_ready(server)
    async with sse_client(stream_url(server)) as first, sse_client(stream_url(server)) as second:
        assert first.status == 200
        body = json.loads(await second.read_body())
        assert second.status == 429
        assert second.headers["retry-after"] == "2"
        assert body == {"error": "too many handshakes"}
    counters = await wait_stats(server, lambda s: s["connections"] == 0)
    assert counters["handshake_rate_refusals"] == 1


async def test_the_websocket_upgrade_still_works_on_the_same_path_and_both_get_the_same_frame_text(
    unsnapshotted_server, broker
):
    from support import ws_client

    server = await settled(unsnapshotted_server)
    topic = server.topic
    async with (
        sse_client(stream_url(server, "device_ids=both")) as events,
        ws_client(server.ws_url("/api/v1/stream?device_ids=both")) as ws,
    ):
        await wait_stats(server, lambda s: s["connections"] == 2)
        await produce(broker.bootstrap, topic, [record("both", 1)])
        text = await ws.connection.recv()
        event = await events.next_event()
    assert event.data == text


async def test_a_client_that_leaves_ends_its_session_at_once(default_server):
    server = await settled(default_server)
    before = await wait_stats(server, lambda s: True)
    for leave in ("close", "abort"):
        client = await open_sse(stream_url(server, "device_ids=gone-1,gone-2"))
        await wait_stats(server, lambda s: s["connections"] == 1 and s["devices_subscribed"] == 2)
        if leave == "abort":
            client.abort()
        else:
            await client.close()
        counters = await wait_stats(server, lambda s: s["connections"] == 0 and s["devices_subscribed"] == 0, timeout=3)
    opened = counters["connections_opened"] - before["connections_opened"]
    assert opened == counters["connections_closed"] - before["connections_closed"] == 2


SECRET = "sse-integration-secret-" + uuid.uuid4().hex
DASHBOARD = "https://dispatch.example.com"


def mint(devices, *, expires_in: float = 300) -> str:
    return jwt.encode({"exp": int(time.time() + expires_in), "devices": devices}, SECRET, algorithm="HS256")


STATS = {"Authorization": f"Bearer {mint([], expires_in=3600)}"}


async def test_tokens_get_401_and_403_as_for_the_stats_endpoint_and_a_good_one_streams(make_server):
    server = make_server(STREAM_JWT_SECRET=SECRET)
    await wait_ready(server)
    cases = [
        ("", {}, 401, "token is required"),
        ("token=not-a-jwt", {}, 401, ""),
        ("", {"Authorization": "Basic abc"}, 401, "Bearer"),
        (f"token={mint(['bus-1'], expires_in=-60)}", {}, 401, "expired"),
        (f"device_ids=bus-2&token={mint(['bus-1'])}", {}, 403, "bus-2"),
    ]
    for query, headers, status, expected in cases:
        async with sse_client(stream_url(server, query), headers) as client:
            body = json.loads(await client.read_body())
        assert client.status == status, (query, body)
        assert expected in json.dumps(body), (query, body)
        if status == 401:
            assert client.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    async with (
        sse_client(stream_url(server, f"token={mint(['bus-1'])}")) as by_query,
        sse_client(stream_url(server), {"Authorization": f"Bearer {mint(['bus-1'])}"}) as by_header,
    ):
        assert by_query.status == by_header.status == 200
    counters = await wait_stats(server, lambda s: s["connections"] == 0, headers=STATS)
    assert counters["auth_failures"] == 4 and counters["forbidden_requests"] == 1


async def test_an_expired_token_ends_the_stream_after_a_final_error_event(make_server):
    server = make_server(STREAM_JWT_SECRET=SECRET, STREAM_TOKEN_NOTICE_SECONDS="0")
    await wait_ready(server)
    async with sse_client(stream_url(server, f"token={mint(['bus-1'], expires_in=2)}")) as client:
        assert client.status == 200
        frame = await client.next_frame(10)
        await client.read_body(5)
    assert frame == {"event": "error", "data": {"message": "token expired"}}
    assert client.ended  # the body ended: EventSource reconnects, and its token is refused then
    assert bytes(client.body).endswith(b'data: {"event":"error","data":{"message":"token expired"}}\n\n')
    counters = await wait_stats(server, lambda s: s["connections"] == 0, headers=STATS)
    assert counters["token_expiries"] == 1


async def test_allowed_origins_get_the_cors_headers_and_refused_ones_403_without_them(origins_server):
    server = await settled(origins_server)
    refusals = (await wait_stats(server, lambda s: True))["origin_refusals"]
    async with sse_client(stream_url(server), {"Origin": DASHBOARD}) as allowed:
        assert allowed.status == 200
        assert allowed.headers["access-control-allow-origin"] == DASHBOARD
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert allowed.headers["vary"] == "Origin"
    async with sse_client(stream_url(server), {"Origin": "https://elsewhere.example"}) as refused:
        body = json.loads(await refused.read_body())
    assert refused.status == 403 and body == {"error": "origin not allowed"}
    assert "access-control-allow-origin" not in refused.headers
    async with sse_client(stream_url(server, "device_ids=bad%20id"), {"Origin": DASHBOARD}) as bad:
        await bad.read_body()
    # An error a page may read (with fetch) across origins.
    assert bad.status == 400 and bad.headers["access-control-allow-origin"] == DASHBOARD
    async with sse_client(stream_url(server)) as no_origin:
        assert no_origin.status == 200 and "access-control-allow-origin" not in no_origin.headers
    counters = await wait_stats(server, lambda s: s["connections"] == 0)
    assert counters["origin_refusals"] == refusals + 1


async def test_a_preflight_for_a_long_last_event_id_is_answered_for_allowed_origins_only(origins_server):
    """Browsers preflight a reconnect whose Last-Event-ID is not CORS-safelisted (over 128 bytes:
    the cursor of a topic of many partitions)."""
    server = await settled(origins_server)
    asked = {
        "Origin": DASHBOARD,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "last-event-id",
    }
    async with sse_client(stream_url(server), asked, method="OPTIONS") as allowed:
        await allowed.read_body()
    assert allowed.status == 204
    assert allowed.headers["access-control-allow-origin"] == DASHBOARD
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert allowed.headers["access-control-allow-methods"] == "GET"
    assert "last-event-id" in allowed.headers["access-control-allow-headers"].lower()
    assert int(allowed.headers["access-control-max-age"]) > 0
    async with sse_client(
        stream_url(server), {**asked, "Origin": "https://elsewhere.example"}, method="OPTIONS"
    ) as refused:
        await refused.read_body()
    assert refused.status == 403 and "access-control-allow-origin" not in refused.headers


async def test_a_reader_that_stops_reading_gets_a_final_error_event_when_it_reads_again(make_server, broker, topic):
    server = make_server(
        STREAM_SEND_TIMEOUT_SECONDS="1",
        STREAM_CLOSE_LINGER_SECONDS="30",
        STREAM_SNAPSHOT="false",
        STREAM_MAX_PENDING_FRAMES="100000",
    )
    await wait_ready(server)
    client = await open_sse(stream_url(server, "device_ids=slow-1"), receive_buffer=4096, limit=4096)
    try:
        await wait_stats(server, lambda s: s["connections"] == 1)
        padding = "x" * 20_000
        # About 12 MB for a client that reads none of it: its writes stall, and it is let go.
        values = [json.dumps({"data": {"DEVICE_ID": "slow-1", "SEQ": n, "PAD": padding}}).encode() for n in range(600)]
        await produce(broker.bootstrap, topic, values, key="slow-1")
        counters = await wait_stats(
            server, lambda s: s["slow_client_closes"] == 1 and s["connections"] == 0, timeout=30
        )
        await client.read_body(30)
    finally:
        await client.close()
    events = body_events(bytes(client.body))
    assert events[-1] == {"event": "error", "data": {"message": "client too slow"}}
    seqs = [frame["data"]["data"]["SEQ"] for frame in events[:-1]]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) and len(seqs) < 600  # conflated, in order
    assert client.ended
    assert counters["slow_client_closes"] == 1


def body_events(body: bytes) -> list[dict]:
    from bench.eventstream import EventParser

    return [json.loads(event.data) for event in EventParser().feed(body)]


async def test_a_server_shutting_down_ends_each_event_stream_cleanly_and_at_once(make_server):
    server = make_server()
    await wait_ready(server)
    async with sse_client(stream_url(server)) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        started = time.monotonic()
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        await client.read_body(10)
        ended_after = time.monotonic() - started
        status = await stopping
    stopped_after = time.monotonic() - started
    # A clean end and no error: EventSource reconnects by itself (to another replica).
    assert client.ended
    assert b'"event":"error"' not in client.body
    assert status == 0
    assert ended_after < 3 and stopped_after < 8, (ended_after, stopped_after)


async def test_a_stream_outlives_quarts_response_timeout(broker, topic):
    """Quart sends a returned response under RESPONSE_TIMEOUT (60 s by default) and cuts it
    there; the stream is written by its route, outside that timeout."""
    from chaos.inprocess import InProcessServer

    from siscom.config import Settings

    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "STREAM_KEEPALIVE_SECONDS": "0.3"}
    )
    server = InProcessServer(settings)
    server.app.config["RESPONSE_TIMEOUT"] = 1
    async with server:
        async with sse_client(stream_url(server)) as client:
            started = time.monotonic()
            while time.monotonic() - started < 2.5:
                await client.next_event(2.0, skip_pings=False)
            assert not client.ended


async def test_frames_waiting_for_a_client_leave_together_in_one_write(unsnapshotted_server, broker):
    server = await settled(unsnapshotted_server)
    topic = server.topic
    async with sse_client(stream_url(server, "device_ids=burst")) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        before = len(client.chunks)
        await produce(broker.bootstrap, topic, [record("burst", n) for n in range(32)])
        events = [await client.next_event() for _ in range(32)]
        writes = len(client.chunks) - before
    assert [json.loads(e.data)["data"]["data"]["SEQ"] for e in events] == list(range(32))
    # A chunk of the response is one ASGI body message, so one write: several events in each.
    assert writes <= 32 // 4, client.chunks[before:]


async def test_map_options_apply_to_an_event_stream_as_to_a_websocket(unsnapshotted_server, broker):
    server = await settled(unsnapshotted_server)
    topic = server.topic
    async with sse_client(stream_url(server, "bbox=-78,-13,-76,-11")) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        inside = json.dumps({"data": {"DEVICE_ID": "in-box", "lat": -12.0, "lon": -77.0}}).encode()
        outside = json.dumps({"data": {"DEVICE_ID": "elsewhere", "lat": 40.0, "lon": -3.7}}).encode()
        leaving = json.dumps({"data": {"DEVICE_ID": "in-box", "lat": 40.0, "lon": -3.7}}).encode()
        await produce(broker.bootstrap, topic, [outside, inside, leaving])
        entered = await client.next_frame()
        left = await client.next_event()
    assert entered["data"]["data"]["DEVICE_ID"] == "in-box"
    # A leave frame has no cursor: no id, so the browser's Last-Event-ID stays the last record's.
    assert json.loads(left.data) == {"event": "leave", "data": {"device_id": "in-box"}}
    assert left.id is None and client.parser.last_event_id == entered["id"]


async def test_under_hypercorn_frames_go_out_below_asgi_as_whole_chunks_and_arrive_intact(broker, topic, monkeypatch):
    """The direct path (siscom.web.server.sse_transport.ChunkWriter) is taken, and what it writes reads
    back as the same events, in order, between the chunks Hypercorn writes (retry, end)."""
    from chaos.inprocess import InProcessServer

    from siscom.config import Settings
    from siscom.web.server.sse_transport import ChunkWriter

    written: list[int] = []
    original = ChunkWriter.write

    def counting(self, texts):
        written.append(len(texts))
        original(self, texts)

    monkeypatch.setattr(ChunkWriter, "write", counting)
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_FETCH_MAX_WAIT_MS": "10",
            "STREAM_SNAPSHOT": "false",
        }
    )
    async with InProcessServer(settings) as server:
        async with sse_client(stream_url(server, "device_ids=direct")) as client:
            await wait_stats(server, lambda s: s["connections"] == 1)
            await produce(broker.bootstrap, topic, [record("direct", n) for n in range(40)])
            events = [await client.next_event() for _ in range(40)]
            server.gateway.sessions()[0].close(CloseCode.GOING_AWAY, "server shutting down")
            await client.read_body()
    assert [json.loads(e.data)["data"]["data"]["SEQ"] for e in events] == list(range(40))
    assert sum(written) == 40 and len(written) < 40
    assert client.ended and bytes(client.body).startswith(b"retry: ")
