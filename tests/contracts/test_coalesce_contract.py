"""What write coalescing (siscom/web/server/coalesce.py) relies on in Hypercorn and wsproto, pinned.

The writer frames texts itself (or through the connection's wsproto object when compressing) and
writes them to the asyncio transport Hypercorn serves the websocket on, bypassing ASGI. Each
check runs the real Hypercorn on a loopback port with a bare ASGI app and a real client, and
fails naming the installed versions when that stops working: then coalesce.py needs a look
before the upgrade (or STREAM_COALESCE_WRITES=false until it has had one).
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import pytest
import websockets
from contracts.test_hypercorn_contract import Probe, hypercorn_serving

from siscom.web.server.coalesce import DirectWriter, frame_cache
from siscom.web.server.frames import data_frame
from siscom.web.server.link import HypercornConnection

VERSIONS = (
    f"hypercorn {version('hypercorn')}, wsproto {version('wsproto')} "
    "(coalesce.py was written against hypercorn 0.18.0, wsproto 1.3.2)"
)
TEXTS = ["short", "é" * 100, "x" * 70_000]  # the three RFC 6455 length encodings


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_frames_written_below_asgi_reach_a_client_whole_and_in_order(compression):
    probe = Probe()
    async with hypercorn_serving(probe) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", compression=compression) as client:
            await asyncio.wait_for(probe.accepted.wait(), 5)
            writer = DirectWriter.of(probe.links[0], frame_cache())
            assert writer is not None, f"{VERSIONS}: no stream or transport behind the ASGI send"
            # Hypercorn's own permessage-deflate (the app did not negotiate it): per connection.
            assert writer.shared is (compression is None), (
                f"{VERSIONS}: the agreed extensions are no longer at Connection._proto.extensions"
            )
            assert writer.ready(), f"{VERSIONS}: an open websocket does not read as ready"
            writer.write(TEXTS[:2])
            writer.write(TEXTS[2:])
            received = [await asyncio.wait_for(client.recv(), 5) for _ in TEXTS]
            assert received == TEXTS, f"{VERSIONS}: frames written below ASGI arrived changed"
            # The plain path still works after (and interleaved with) direct writes.
            await client.send("ping me")
        for _ in range(100):
            if not writer.ready():
                break
            await asyncio.sleep(0.02)
        assert not writer.ready(), f"{VERSIONS}: a closed websocket still reads as ready to write"


async def test_once_the_app_has_sent_its_close_frame_the_writer_is_not_ready():
    """No data frame may follow the close frame: the writer reads wsproto's state, which Hypercorn
    moves in the same step as it sends the application's close."""
    readiness: list[bool] = []
    closed = asyncio.Event()

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await Probe()(scope, receive, send)
            return
        await receive()
        await send({"type": "websocket.accept"})
        writer = DirectWriter.of(HypercornConnection.of(send), frame_cache())
        assert writer is not None, VERSIONS
        readiness.append(writer.ready())
        await send({"type": "websocket.close", "code": 1000})
        readiness.append(writer.ready())
        closed.set()
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async with hypercorn_serving(app) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as client:
            await asyncio.wait_for(closed.wait(), 5)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(client.recv(), 5)
    assert readiness == [True, False], f"{VERSIONS}: ready to write after the close frame went out"


def test_text_frames_are_built_as_wsproto_builds_them():
    from wsproto.frame_protocol import FrameProtocol

    protocol = FrameProtocol(client=False, extensions=[])
    for text in TEXTS:
        assert data_frame(text.encode()) == bytes(protocol.send_data(text, True)), VERSIONS
