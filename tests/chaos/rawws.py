"""A WebSocket client on a bare socket, for what polite clients never do: stall and reset.

The protocol (handshake, frame codec) is :mod:`bench.rfc6455`, which the benchmark's load
client uses too; this module only does the I/O, and all of it explicitly, so a test can stop
reading after the handshake, or reset the connection (RST, with ``SO_LINGER`` 0) in the middle
of a frame.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import deque
from urllib.parse import urlsplit

from bench.rfc6455 import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ClientHandshake,
    HandshakeFailed,
    close_code,
    masked_frame,
    split_frames,
    take_head,
)

__all__ = ["OP_CLOSE", "OP_PING", "OP_PONG", "OP_TEXT", "HandshakeFailed", "RawWebSocket", "masked_frame"]


class RawWebSocket:
    """One connection; nothing is read unless the test asks."""

    def __init__(self, sock: socket.socket, leftover: bytes, deflate: bool = False) -> None:
        self.sock = sock
        self._buffer = bytearray(leftover)
        self._frames: deque[tuple[int, bytes]] = deque()
        #: Whether the server agreed to permessage-deflate.
        self.deflate = deflate

    @classmethod
    async def connect(
        cls, url: str, *, receive_buffer: int | None = None, timeout: float = 5.0, deflate: bool = False
    ) -> RawWebSocket:
        """Open ``ws://host:port/path?query`` and complete the handshake; read nothing more.

        ``receive_buffer`` sets ``SO_RCVBUF`` before connecting, so the TCP window stays small.
        ``deflate`` offers permessage-deflate as browsers do (frames are then read as sent).
        """
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        handshake = ClientHandshake(host, port, path, deflate=deflate)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setblocking(False)
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (host, port))
                await loop.sock_sendall(sock, handshake.request)
                response = bytearray()
                while (head := take_head(response)) is None:
                    # One byte at a time: not a byte of the first frame is read with the headers.
                    chunk = await loop.sock_recv(sock, 1)
                    if not chunk:
                        raise HandshakeFailed(f"connection closed during the handshake: {bytes(response)!r}")
                    response += chunk
                agreed = handshake.accept(head)
        except BaseException:
            sock.close()
            raise
        return cls(sock, bytes(response), agreed)

    async def read_frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload)."""
        first, payload = await self.read_raw_frame()
        return first & 0x0F, payload

    async def read_raw_frame(self) -> tuple[int, bytes]:
        """The next frame from the server as sent: (first byte, payload, compressed or not)."""
        loop = asyncio.get_running_loop()
        while not self._frames:
            self._frames.extend(split_frames(self._buffer))
            if self._frames:
                break
            chunk = await loop.sock_recv(self.sock, 65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self._buffer += chunk
        return self._frames.popleft()

    async def read_until_close(self, timeout: float) -> tuple[int, list[bytes]]:
        """Read frames until a close frame; return its code (1005 if it has none) and the text
        payloads before it."""
        texts: list[bytes] = []
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.read_frame()
                if opcode == OP_CLOSE:
                    return close_code(payload), texts
                if opcode == OP_TEXT:
                    texts.append(payload)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def reset(self) -> None:
        """Abort the connection: the server sees a TCP reset, not a close."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()
