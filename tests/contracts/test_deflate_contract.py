"""What the gateway's permessage-deflate (siscom/web/server/deflate.py) relies on in Hypercorn and
wsproto, pinned.

The gateway answers a websocket's compression offer itself by wrapping the ``accept`` of
Hypercorn's handshake object for that stream, and hands Hypercorn a wsproto connection carrying
its own extension. Each check runs the real Hypercorn on a loopback port with a bare ASGI app and
a real client, and fails naming the installed versions when that stops working: then deflate.py
needs a look before the upgrade (or STREAM_WEBSOCKET_COMPRESSION=server until it has had one).
"""

from __future__ import annotations

import asyncio
import zlib
from importlib.metadata import version

import websockets
from contracts.test_hypercorn_contract import hypercorn_serving, serve_lifespan

from siscom.web.server.coalesce import DirectWriter, frame_cache
from siscom.web.server.deflate import DeflatedFrames, deflated, negotiate
from siscom.web.server.link import HypercornConnection

VERSIONS = (
    f"hypercorn {version('hypercorn')}, wsproto {version('wsproto')} "
    "(deflate.py was written against hypercorn 0.18.0, wsproto 1.3.2)"
)
#: Three sizes: the smallest window, a larger one, and more than the largest (2^15) holds.
TEXTS = ["short", "é" * 1000, "".join(f"{n:06d}," for n in range(10_000))]


class DeflateProbe:
    """A bare ASGI websocket app that negotiates compression the gateway's way, then sends each
    text it is given below ASGI and through ASGI, and records what the client sends."""

    def __init__(self, frames: DeflatedFrames | None) -> None:
        self.frames = frames
        self.negotiated: list[bool] = []
        self.writers: list[DirectWriter | None] = []
        self.received: list[str] = []
        self.accepted = asyncio.Event()
        self.send: object = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        await receive()  # websocket.connect
        link = HypercornConnection.of(send)
        self.negotiated.append(negotiate(link, self.frames))
        await send({"type": "websocket.accept"})
        self.writers.append(DirectWriter.of(link, frame_cache()))
        self.send = send
        self.accepted.set()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            self.received.append(message["text"])


async def test_the_gateway_answers_the_offer_and_its_frames_reach_the_client_both_ways():
    probe = DeflateProbe(DeflatedFrames())
    async with hypercorn_serving(probe) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", compression="deflate", max_size=None) as client:
            await asyncio.wait_for(probe.accepted.wait(), 5)
            assert probe.negotiated == [True], f"{VERSIONS}: no handshake object to answer the offer through"
            (extension,) = client.protocol.extensions
            # What Hypercorn answers itself would carry client_max_window_bits=15 (wsproto's accept).
            assert extension.name == "permessage-deflate" and extension.remote_max_window_bits == 15, VERSIONS
            writer = probe.writers[0]
            assert writer is not None and writer.shared, f"{VERSIONS}: the agreed extension is not the gateway's"
            writer.write(TEXTS)
            below = [await asyncio.wait_for(client.recv(), 5) for _ in TEXTS]
            for text in TEXTS:  # Hypercorn's own path: wsproto frames, the extension compresses
                await probe.send({"type": "websocket.send", "text": text})  # type: ignore[operator]
            through = [await asyncio.wait_for(client.recv(), 5) for _ in TEXTS]
            assert below == TEXTS and through == TEXTS, f"{VERSIONS}: compressed frames arrived changed"
            # What the client compresses is inflated by wsproto, as Hypercorn's would be.
            for text in TEXTS:
                await client.send(text)
            for _ in range(250):
                if len(probe.received) == len(TEXTS):
                    break
                await asyncio.sleep(0.02)
            assert probe.received == TEXTS, f"{VERSIONS}: compressed messages from the client were not read"


async def test_declining_leaves_the_stream_uncompressed():
    probe = DeflateProbe(None)
    async with hypercorn_serving(probe) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", compression="deflate") as client:
            await asyncio.wait_for(probe.accepted.wait(), 5)
            assert probe.negotiated == [True], VERSIONS
            assert client.protocol.extensions == [], f"{VERSIONS}: Hypercorn agreed compression itself"
            writer = probe.writers[0]
            assert writer is not None and writer.shared, VERSIONS
            writer.write(TEXTS[:1])
            assert await asyncio.wait_for(client.recv(), 5) == TEXTS[0]


def test_a_message_compressed_alone_inflates_with_any_window_it_was_agreed_within():
    for text in TEXTS:
        payload = text.encode()
        for bits in range(9, 16):
            inflater = zlib.decompressobj(-bits)
            assert inflater.decompress(deflated(payload, bits) + b"\x00\x00\xff\xff") == payload
