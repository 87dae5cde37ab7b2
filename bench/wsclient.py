"""A bare WebSocket client for load: just enough protocol to read a stream cheaply.

The benchmark runs thousands of clients on the same two cores as the server it measures, so a
client must cost far less per frame than the server does, or the clients become the bottleneck
and the figures describe them instead of the server. A full client library parses every frame
through a state machine and wakes a coroutine per message; this one is an
:class:`asyncio.Protocol` that splits each chunk the socket delivers into frames in one loop
(:func:`siscom.dev.rfc6455.split_frames`, the codec the tests' raw client uses too) and hands
every text frame, with the time the chunk arrived, to a callback.

It asks for no subprotocol, and for compression (permessage-deflate, RFC 7692) only when told
to, as browsers always do: the server then compresses every frame for every client separately,
which the benchmark can show. It answers pings and close frames as RFC 6455 requires and
otherwise only listens.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from typing import TypeVar

from siscom.dev import rfc6455
from siscom.dev.rfc6455 import DEFLATE_TAIL, OP_BINARY, OP_TEXT, RSV1, HandshakeFailed, split_frames

__all__ = ["HandshakeFailed", "OnText", "StreamClient", "connect_opened", "open_stream"]

OnText = Callable[[bytes, float], None]
#: A client protocol with an ``opened`` future and ``abort()`` (this module's, or the SSE one's).
Opening = TypeVar("Opening", bound=asyncio.Protocol)


class StreamClient(asyncio.Protocol):
    """One connection. ``on_text(payload, arrived)`` gets every text frame, in order."""

    transport = "websocket"

    def __init__(self, host: str, port: int, path: str, on_text: OnText, *, deflate: bool = False) -> None:
        self._handshake = rfc6455.ClientHandshake(host, port, path, deflate=deflate)
        #: Set when the server agreed to compress; one context for the whole connection.
        self._inflater: zlib._Decompress | None = None
        self._on_text = on_text
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        loop = asyncio.get_running_loop()
        #: Resolves once the server answered 101 (or fails with the reason it did not).
        self.opened: asyncio.Future[None] = loop.create_future()
        #: Resolves with the server's close code (1006 when the connection just dropped).
        self.closed: asyncio.Future[int] = loop.create_future()
        self.close_code: int | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.write(self._handshake.request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded and not self._read_handshake():
            return
        arrived = time.time()
        on_text = self._on_text
        for first, payload in split_frames(buffer):
            opcode = first & 0x0F
            if opcode == OP_TEXT:
                if first & RSV1 and self._inflater is not None:  # a compressed message
                    payload = self._inflater.decompress(payload + DEFLATE_TAIL)
                on_text(payload, arrived)
            elif opcode != OP_BINARY:
                self._control(opcode, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeFailed("connection closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code if self.close_code is not None else 1006)

    # Protocol details

    def _read_handshake(self) -> bool:
        try:
            head = rfc6455.take_head(self._buffer)
            if head is None:
                return False
            deflate = self._handshake.accept(head)
        except HandshakeFailed as failed:
            self._fail(failed)
            return False
        if deflate:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._upgraded = True
        self.opened.set_result(None)
        return True

    def _fail(self, failed: HandshakeFailed) -> None:
        if not self.opened.done():
            self.opened.set_exception(failed)
        if self._transport is not None:
            self._transport.close()

    def _control(self, opcode: int, payload: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if opcode == rfc6455.OP_PING:
            transport.write(rfc6455.masked_frame(payload, rfc6455.OP_PONG))
        elif opcode == rfc6455.OP_CLOSE:
            self.close_code = rfc6455.close_code(payload)
            transport.write(rfc6455.masked_frame(payload[:2], rfc6455.OP_CLOSE))
            transport.close()

    # For the owner

    def send_text(self, text: str) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(rfc6455.masked_frame(text.encode()))

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the server's answer (or a drop) resolves :attr:`closed`."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._upgraded:
            transport.write(rfc6455.masked_frame(code.to_bytes(2, "big"), rfc6455.OP_CLOSE))
        else:
            transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


async def connect_opened(make: Callable[[], Opening], host: str, port: int, timeout: float) -> Opening:
    """Connect a protocol made by ``make`` and wait for its ``opened``; raise (and drop the
    connection) if either fails within ``timeout``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, client = await loop.create_connection(make, host, port)
        try:
            await client.opened
        except BaseException:
            client.abort()
            raise
    return client


async def open_stream(
    host: str, port: int, path: str, on_text: OnText, *, deflate: bool = False, timeout: float = 10.0
) -> StreamClient:
    """Connect and complete the WebSocket handshake; raise if either fails within ``timeout``."""
    return await connect_opened(lambda: StreamClient(host, port, path, on_text, deflate=deflate), host, port, timeout)
