"""permessage-deflate end to end: the app under Hypercorn, a real broker, real clients offering it.

``STREAM_WEBSOCKET_COMPRESSION=shared`` (the default) compresses each frame once, on its own, and
sends the same bytes to every client that agreed; ``off`` declines every offer; ``server`` leaves
the offer to Hypercorn (each frame compressed again per client).
"""

from __future__ import annotations

import json
import zlib

import pytest
from chaos.rawws import OP_TEXT, RawWebSocket
from support import collect, ws_client
from support.kafka import produce
from support.status import wait_ready, wait_stats
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate

#: RFC 7692 section 7.2.2: what a receiver appends to each message before inflating it.
TAIL = b"\x00\x00\xff\xff"
RSV1 = 0x40


def record(device_id: str, n: int) -> bytes:
    # Repetitive enough to compress, as telemetry records are.
    fields = {f"SENSOR_{k}": k * 1.5 for k in range(12)}
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": n, **fields}, "uuid": f"{device_id}-{n}"}).encode()


@pytest.fixture(scope="module")
def shared_server(module_server_factory):
    return module_server_factory("deflate")


@pytest.fixture
async def server(shared_server):
    await wait_ready(shared_server)
    await wait_stats(shared_server, lambda s: s["connections"] == 0)
    return shared_server


async def test_a_deflate_offer_is_agreed_and_every_frame_decodes_to_its_record(server, broker):
    url = server.ws_url("/api/v1/stream?device_ids=zip-0")
    async with ws_client(url, compression="deflate") as client:
        (extension,) = client.connection.protocol.extensions
        assert isinstance(extension, PerMessageDeflate)
        # Nothing asked of the server's context, nothing answered: the server keeps the right
        # to its history (RFC 7692 section 7.1.1.1), and uses none.
        assert extension.remote_no_context_takeover is False
        await wait_stats(server, lambda s: s["connections"] == 1)
        values = [record("zip-0", n) for n in range(20)]
        await produce(broker.bootstrap, server.topic, values)
        frames = await collect(client, len(values))
    assert [json.dumps(frame["data"]).encode() for frame in frames] == [
        json.dumps(json.loads(value)).encode() for value in values
    ]


async def test_every_client_that_agreed_gets_the_same_compressed_bytes_for_a_frame(server, broker):
    url = server.ws_url("/api/v1/stream?device_ids=zip-1")
    first = await RawWebSocket.connect(url, deflate=True)
    second = await RawWebSocket.connect(url, deflate=True)
    try:
        assert first.deflate and second.deflate
        async with ws_client(url, compression="deflate") as library:
            await wait_stats(server, lambda s: s["connections"] == 3)
            values = [record("zip-1", n) for n in range(10)]
            await produce(broker.bootstrap, server.topic, values)
            texts = [await library.connection.recv() for _ in values]
            sent = [[await raw.read_raw_frame() for _ in values] for raw in (first, second)]
    finally:
        first.close()
        second.close()
    assert sent[0] == sent[1]
    for (head, payload), text in zip(sent[0], texts):
        assert head & 0x0F == OP_TEXT and head & RSV1, "not a compressed text frame"
        assert len(payload) < len(text.encode())
        # Each message inflates on its own, with no history of the ones before it.
        assert zlib.decompressobj(-15).decompress(payload + TAIL).decode() == text


async def test_compressed_messages_from_a_client_are_read(server, broker):
    url = server.ws_url("/api/v1/stream?device_ids=zip-2")
    async with ws_client(url, compression="deflate") as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        command = {"action": "subscribe", "device_ids": ["zip-3"] + [f"padding-{n}" for n in range(40)]}
        text = json.dumps(command)
        await client.connection.send(text)
        ack = await client.frames_until(lambda f: f["event"] == "ack")
        assert ack[-1]["data"]["action"] == "subscribe"
        await produce(broker.bootstrap, server.topic, [record("zip-3", 1)])
        (frame,) = await collect(client, 1)
        assert frame["data"]["data"]["DEVICE_ID"] == "zip-3"


@pytest.mark.parametrize(
    "offer",
    [
        # Asks the server to keep no history and a smaller window: both answered.
        {"server_no_context_takeover": True, "server_max_window_bits": 10},
        # Keeps no history of its own, and says so.
        {"client_no_context_takeover": True, "client_max_window_bits": 12},
    ],
)
async def test_offers_with_parameters_get_what_they_asked_for(server, broker, offer):
    device = "zip-4-" + "-".join(sorted(offer))  # a device of its own: no snapshot of the other run
    url = server.ws_url(f"/api/v1/stream?device_ids={device}")
    factory = ClientPerMessageDeflateFactory(**offer)
    async with ws_client(url, compression=None, extensions=[factory]) as client:
        (extension,) = client.connection.protocol.extensions
        assert extension.remote_no_context_takeover is offer.get("server_no_context_takeover", False)
        assert extension.remote_max_window_bits == offer.get("server_max_window_bits", 15)
        assert extension.local_no_context_takeover is offer.get("client_no_context_takeover", False)
        await wait_stats(server, lambda s: s["connections"] == 1)
        values = [record(device, n) for n in range(5)]
        await produce(broker.bootstrap, server.topic, values)
        frames = await collect(client, len(values))
        await client.connection.send(json.dumps({"action": "unsubscribe", "device_ids": [device]}))
        ack = await client.frames_until(lambda f: f["event"] == "ack")
    assert [frame["data"]["uuid"] for frame in frames] == [f"{device}-{n}" for n in range(5)]
    assert ack[-1]["data"]["action"] == "unsubscribe"


async def test_an_offer_that_cannot_be_met_gets_no_compression_and_a_working_stream(server, broker):
    """zlib compresses within no less than 2^9 bytes: a window of 2^8 is declined (RFC 7692
    section 7: the server declines an offer it does not support)."""
    url = server.ws_url("/api/v1/stream?device_ids=zip-5")
    factory = ClientPerMessageDeflateFactory(server_max_window_bits=8)
    async with ws_client(url, compression=None, extensions=[factory]) as client:
        assert client.connection.protocol.extensions == []
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, server.topic, [record("zip-5", 1)])
        (frame,) = await collect(client, 1)
    assert frame["data"]["uuid"] == "zip-5-1"


@pytest.mark.parametrize(("setting", "agreed"), [("off", []), ("server", ["PerMessageDeflate"])])
async def test_compression_can_be_declined_or_left_to_hypercorn(make_server, broker, topic, setting, agreed):
    server = make_server(STREAM_WEBSOCKET_COMPRESSION=setting)
    await wait_ready(server)
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=zip-6"), compression="deflate") as client:
        assert [type(e).__name__ for e in client.connection.protocol.extensions] == agreed
        await wait_stats(server, lambda s: s["connections"] == 1)
        values = [record("zip-6", n) for n in range(5)]
        await produce(broker.bootstrap, topic, values)
        frames = await collect(client, len(values))
        await client.connection.send(json.dumps({"action": "unsubscribe", "device_ids": ["zip-6"]}))
        ack = await client.frames_until(lambda f: f["event"] == "ack")
    assert [frame["data"]["uuid"] for frame in frames] == [f"zip-6-{n}" for n in range(5)]
    assert ack[-1]["data"]["action"] == "unsubscribe"
