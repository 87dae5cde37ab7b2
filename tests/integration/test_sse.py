"""The stream over Server-Sent Events, end to end: a real broker, the app under Hypercorn, and a raw
HTTP client on a real socket that reads the wire byte for byte (not a browser)."""

from __future__ import annotations

import asyncio
import json

import pytest

from support.kafka import produce
from support.sse import ResponseEnded, open_sse, sse_client
from support.status import wait_ready, wait_stats


def record(device_id: str, n: int, **extra) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": n, **extra}, "uuid": f"{device_id}-{n}"}).encode()


def stream_url(server, query: str = "") -> str:
    return f"{server.url}/api/v1/stream" + (f"?{query}" if query else "")


async def test_an_event_stream_is_the_retry_field_then_each_frame_as_one_event_byte_for_byte(make_server, broker, topic):
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
