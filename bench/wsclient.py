"""A bare WebSocket client: just enough protocol to read a stream cheaply.

The benchmark runs thousands of clients on the same two cores as the server it measures, so a
client must cost far less per frame than the server does, or the clients become the bottleneck
and the figures describe them instead of the server. A full client library parses every frame
through a state machine and wakes a coroutine per message; this one is an
:class:`asyncio.Protocol` that splits each chunk the socket delivers into frames in one loop
and hands every text frame, with the time the chunk arrived, to a callback.

It asks for no subprotocol, and for compression (permessage-deflate, RFC 7692) only when told
to, as browsers always do: the server then compresses every frame for every client separately,
which the benchmark can show. It answers pings and close frames as RFC 6455 requires and
otherwise only listens.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
import zlib
from collections.abc import Callable

#: Opcodes (RFC 6455, section 5.2).
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA

#: Largest HTTP response head accepted during the handshake.
MAX_HEAD = 16 * 1024

OnText = Callable[[bytes, float], None]


class HandshakeFailed(ConnectionError):
    """The server did not switch protocols."""


def masked_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A final client frame: clients must mask, so mask it (with a fresh key)."""
    key = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    repeated = (key * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
    return head + key + masked


class StreamClient(asyncio.Protocol):
    """One connection. ``on_text(payload, arrived)`` gets every text frame, in order."""

    def __init__(self, host: str, port: int, path: str, on_text: OnText, *, deflate: bool = False) -> None:
        self._request = (
            f"GET {path} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            + ("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else "")
            + "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
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
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded and not self._read_handshake():
            return
        arrived = time.time()
        on_text = self._on_text
        offset, size = 0, len(buffer)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length = second & 0x7F
            start = offset + 2
            if length == 126:
                if size - start < 2:
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode == TEXT:
                payload = bytes(buffer[start:end])
                if first & 0x40 and self._inflater is not None:  # RSV1: a compressed message
                    payload = self._inflater.decompress(payload + b"\x00\x00\xff\xff")
                on_text(payload, arrived)
            elif opcode != BINARY:
                self._control(opcode, bytes(buffer[start:end]))
            offset = end
        if offset:
            del buffer[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeFailed("connection closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code if self.close_code is not None else 1006)

    # Protocol details

    def _read_handshake(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                self._fail("response head too large")
            return False
        head = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            self._fail(status.decode("latin-1"))
            return False
        if b"permessage-deflate" in head.lower():
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._upgraded = True
        self.opened.set_result(None)
        return True

    def _fail(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeFailed(reason))
        if self._transport is not None:
            self._transport.close()

    def _control(self, opcode: int, payload: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if opcode == PING:
            transport.write(masked_frame(PONG, payload))
        elif opcode == CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            transport.write(masked_frame(CLOSE, payload[:2]))
            transport.close()

    # For the owner

    def send_text(self, text: str) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(masked_frame(TEXT, text.encode()))

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the server's answer (or a drop) resolves :attr:`closed`."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._upgraded:
            transport.write(masked_frame(CLOSE, code.to_bytes(2, "big")))
        else:
            transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


async def open_stream(
    host: str, port: int, path: str, on_text: OnText, *, deflate: bool = False, timeout: float = 10.0
) -> StreamClient:
    """Connect and complete the WebSocket handshake; raise if either fails within ``timeout``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, client = await loop.create_connection(
            lambda: StreamClient(host, port, path, on_text, deflate=deflate), host, port
        )
        try:
            await client.opened
        except BaseException:
            client.abort()
            raise
    return client
