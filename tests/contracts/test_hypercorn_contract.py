"""What this project relies on in Hypercorn's internals (siscom/web/server/link.py), pinned.

Each check runs the real Hypercorn on a loopback port with a bare ASGI app and fails, naming the
installed version, when the behaviour or the private chain the link walks has changed: then
link.py needs a look before the upgrade. (The route gets the ASGI send through Quart's
private ``ASGIWebsocketConnection._create_websocket_from_scope``, overridden in
web/server/ws_transport.py:
test_dependency_contracts.py checks that method, and tests/security/ fail end to end without it.)
"""

from __future__ import annotations

import asyncio
import base64
import os
from contextlib import asynccontextmanager
from importlib.metadata import version

from hypercorn.asyncio import serve
from hypercorn.config import Config

from siscom.core.sse import EventCache
from siscom.dev.broker import free_port
from siscom.web.server.link import HypercornConnection, PipelineGuard
from siscom.web.server.sse_transport import ChunkWriter

HYPERCORN = f"hypercorn {version('hypercorn')} (this project was written against 0.18.0)"
H11 = f"h11 {version('h11')} (written against 0.16.0)"


def test_h11_frames_a_chunked_body_without_keeping_count():
    """ChunkWriter writes chunks beside h11's: sound only while h11's chunked writer is stateless."""
    from h11._headers import Headers
    from h11._writers import ChunkedWriter

    out: list[bytes] = []
    writer = ChunkedWriter()
    writer.send_data(b"data: x\n\n", out.append)
    writer.send_eom(Headers([]), out.append)
    assert b"".join(out) == b"9\r\ndata: x\n\n\r\n0\r\n\r\n", f"{H11}: chunked framing changed: {out}"
    assert not getattr(writer, "__dict__", {}), f"{H11}: ChunkedWriter keeps state {vars(writer)}"


async def serve_lifespan(receive, send) -> None:
    """An ASGI app's part of the lifespan protocol: every step done at once, until shutdown."""
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


class Probe:
    """A bare ASGI websocket app that accepts at once and records what it sees."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.links: list[HypercornConnection | None] = []
        self.accepted = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        self.messages.append((await receive())["type"])  # websocket.connect
        await send({"type": "websocket.accept"})
        self.links.append(HypercornConnection.of(send))
        self.accepted.set()
        while True:
            message = await receive()
            self.messages.append(message["type"])
            if message["type"] == "websocket.disconnect":
                return


@asynccontextmanager
async def hypercorn_serving(app):
    config = Config()
    port = free_port("127.0.0.1")
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0  # the abandoned probe app never returns by itself
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    try:
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
            else:
                writer.close()
                break
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)


async def ended(reader: asyncio.StreamReader) -> bool:
    """True once the server ended the connection (a reset, as the link drops it, or a close)."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


def upgrade_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def accepted_websocket(port: int, probe: Probe) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A raw client's websocket on ``port``, once the probe app has accepted it, and the head of
    the server's answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(port))
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    await asyncio.wait_for(probe.accepted.wait(), 5)
    return reader, writer, answer


async def test_bytes_before_the_accept_get_a_400_and_the_app_sees_only_the_abandoned_flag():
    probe = Probe()
    async with hypercorn_serving(probe) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_request(port) + b"\x00")
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await asyncio.wait_for(probe.accepted.wait(), 5)
        link = probe.links[0]
        assert answer.startswith(b"HTTP/1.1 400"), f"{HYPERCORN}: answered {answer[:40]!r} to bytes before the accept"
        assert link is not None, f"{HYPERCORN}: the ASGI send no longer leads to WSStream -> H11Protocol -> TCPServer"
        assert link.abandoned, f"{HYPERCORN}: WSStream.closed is not set after a 400 to bytes before the accept"
        writer.close()
        await asyncio.sleep(0.5)
        # The behaviour the link makes up for: no disconnect ever reaches the app.
        assert probe.messages == ["websocket.connect"], (
            f"{HYPERCORN}: now tells the app {probe.messages[1:]} after abandoning a handshake; "
            "the route's check of HypercornConnection.abandoned may be unnecessary"
        )
        link.abort()


async def test_a_normal_handshake_is_not_abandoned_and_its_connection_can_be_dropped_by_the_app():
    probe = Probe()
    async with hypercorn_serving(probe) as port:
        reader, writer, answer = await accepted_websocket(port, probe)
        link = probe.links[0]
        assert answer.startswith(b"HTTP/1.1 101"), f"{HYPERCORN}: answered {answer[:40]!r}"
        assert link is not None, f"{HYPERCORN}: the ASGI send no longer leads to WSStream -> H11Protocol -> TCPServer"
        assert not link.abandoned, f"{HYPERCORN}: WSStream.closed is set on an accepted websocket"
        link.abort()
        assert await ended(reader), f"{HYPERCORN}: aborting the writer's transport did not end the connection"
        for _ in range(100):
            if "websocket.disconnect" in probe.messages:
                break
            await asyncio.sleep(0.02)
        assert probe.messages == ["websocket.connect", "websocket.disconnect"], (
            f"{HYPERCORN}: a dropped connection is not reported to the app as a disconnect"
        )
        writer.close()


async def test_the_worker_context_says_when_the_server_stops():
    probe = Probe()
    stopping = asyncio.Event()

    async def watch(link: HypercornConnection) -> None:
        await link.server_stopping()
        stopping.set()

    async with hypercorn_serving(probe) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_request(port))
        await asyncio.wait_for(probe.accepted.wait(), 5)
        watcher = asyncio.create_task(watch(probe.links[0]))
        await asyncio.sleep(0.1)
        assert not stopping.is_set(), f"{HYPERCORN}: the worker context reads as terminated while serving"
        writer.close()
    # Leaving the block triggered the shutdown; the context was terminated first.
    await asyncio.wait_for(watcher, 1)
    assert stopping.is_set(), f"{HYPERCORN}: WorkerContext.terminated is not set on shutdown"


def masked_text_frame(text: bytes, opcode: int = 0x1) -> bytes:
    """A client's frame (FIN set, masked), text unless ``opcode`` says otherwise."""
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))


async def test_a_connection_paused_by_the_app_reads_nothing_more_from_its_client():
    """What a client past its allowance of pings gets (siscom.web.server.control_frames): the app stops
    reading its socket, so what it still sends stays in the kernel, unparsed."""
    probe = Probe()
    async with hypercorn_serving(probe) as port:
        reader, writer, _ = await accepted_websocket(port, probe)
        link = probe.links[0]
        assert link is not None, f"{HYPERCORN}: the ASGI send no longer leads to WSStream -> H11Protocol -> TCPServer"
        writer.write(masked_text_frame(b"before"))
        for _ in range(100):
            if "websocket.receive" in probe.messages:
                break
            await asyncio.sleep(0.02)
        link.pause_reading()
        writer.write(masked_text_frame(b"after"))
        await asyncio.sleep(0.5)
        assert probe.messages == ["websocket.connect", "websocket.receive"], (
            f"{HYPERCORN}: the app saw {probe.messages[2:]} from a connection whose transport it paused"
        )
        link.abort()
        writer.close()


class StreamingProbe:
    """A bare ASGI HTTP app that starts a streaming response and records what it sees."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.links: list[HypercornConnection | None] = []
        self.started = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await Probe()(scope, receive, send)
            return
        self.messages.append((await receive())["type"])  # http.request
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})
        self.links.append(HypercornConnection.of(send))
        self.started.set()
        self.messages.append((await receive())["type"])  # what comes when the client leaves


async def test_a_streaming_response_links_to_its_connection_and_hears_of_the_client_leaving():
    """What the SSE route relies on: the same link from an HTTP response's send (drain on
    shutdown, dropping the connection), and http.disconnect when the client goes mid-response."""
    probe = StreamingProbe()
    async with hypercorn_serving(probe) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await asyncio.wait_for(probe.started.wait(), 5)
        link = probe.links[0]
        assert link is not None, f"{HYPERCORN}: an HTTP send no longer leads to HTTPStream -> H11Protocol -> TCPServer"
        assert hasattr(link.stream, "context"), f"{HYPERCORN}: HTTPStream has no worker context (server_stopping)"
        writer_ = ChunkWriter.of(link, EventCache())
        assert writer_ is not None and writer_.ready(), (
            f"{HYPERCORN}, {H11}: a chunked response in its body is no longer found (HTTPStream.state, "
            "H11Protocol.connection, h11 Connection._writer a ChunkedWriter)"
        )
        writer.close()
        for _ in range(100):
            if len(probe.messages) == 2:
                break
            await asyncio.sleep(0.02)
        assert probe.messages == ["http.request", "http.disconnect"], (
            f"{HYPERCORN}: a client leaving mid-response is reported as {probe.messages[1:]}"
        )


async def test_a_guarded_stream_hears_a_client_that_pipelined_a_request_and_left():
    """What PipelineGuard relies on: bytes behind the request pause Hypercorn (h11 PAUSED), and
    emptying h11's receive buffer and the asyncio reader's, then setting can_read, lets it read
    on and report the client leaving."""
    probe = StreamingProbe()
    async with hypercorn_serving(probe) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        writer.write(head + head)
        await asyncio.wait_for(probe.started.wait(), 5)
        link = probe.links[0]
        assert link is not None
        guard = PipelineGuard.install(link)
        assert guard is not None and guard.dropped == len(head), (
            f"{HYPERCORN}, {H11}: bytes behind a request are no longer held in h11's receive buffer"
        )
        writer.write(head)
        writer.write_eof()
        for _ in range(100):
            if len(probe.messages) == 2:
                break
            await asyncio.sleep(0.02)
        assert probe.messages == ["http.request", "http.disconnect"], (
            f"{HYPERCORN}: a client that pipelined and left is reported as {probe.messages[1:]}"
        )
        assert guard.dropped == 2 * len(head)
        writer.close()


def test_hypercorn_makes_a_queue_per_stream_in_spawn_app_and_uses_only_its_put_and_get():
    """link.lighter_app_queues replaces ``TaskGroup.spawn_app``: sound while Hypercorn builds the
    app's ``receive`` there, from a queue of ``max_app_queue_size``, and hands the stream its put."""
    import inspect

    from hypercorn.asyncio import task_group

    original = task_group.TaskGroup.spawn_app
    if getattr(original, "_siscom_inbox", False):  # replaced in this process already: read the module
        source = inspect.getsource(task_group)
    else:
        source = inspect.getsource(original)
    assert "asyncio.Queue(config.max_app_queue_size)" in source, f"{HYPERCORN}: spawn_app's queue changed"
    assert "app_queue.get," in source and "return app_queue.put" in source, f"{HYPERCORN}: spawn_app changed"
    handle = inspect.signature(task_group._handle)
    assert list(handle.parameters) == ["app", "config", "scope", "receive", "send", "sync_spawn", "call_soon"], (
        f"{HYPERCORN}: _handle's parameters are now {list(handle.parameters)}"
    )


async def test_with_lighter_queues_a_websocket_app_receives_through_an_inbox_until_the_client_leaves():
    from siscom.web.server.inbox import Inbox
    from siscom.web.server.link import lighter_app_queues

    lighter_app_queues()
    receivers: list[object] = []

    class Recording(Probe):
        async def __call__(self, scope, receive, send) -> None:
            receivers.append(getattr(receive, "__self__", None))
            await super().__call__(scope, receive, send)

    probe = Recording()
    async with hypercorn_serving(probe) as port:
        reader, writer, _ = await accepted_websocket(port, probe)
        writer.write(masked_text_frame((1000).to_bytes(2, "big"), opcode=0x8))  # a close, 1000
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        for _ in range(100):
            if "websocket.disconnect" in probe.messages:
                break
            await asyncio.sleep(0.05)
    assert any(isinstance(receiver, Inbox) for receiver in receivers), f"{HYPERCORN}: receive came from {receivers}"
    assert probe.messages == ["websocket.connect", "websocket.disconnect"], probe.messages
