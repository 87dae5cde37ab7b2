"""A WebSocket client on a bare socket, for what polite clients never do: stall and reset.

It speaks just enough of RFC 6455 for the tests: the opening handshake, reading the server's
frames (which are never masked), and sending a masked frame, whole or cut short. Everything it
does is explicit, so a test can stop reading after the handshake, or reset the connection (RST,
with ``SO_LINGER`` 0) in the middle of a frame.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


class HandshakeFailed(Exception):
    pass


def masked_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final client frame: clients must mask what they send."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    body = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + body


class RawWebSocket:
    """One connection; nothing is read unless the test asks."""

    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self._buffer = bytearray(leftover)

    @classmethod
    async def connect(cls, url: str, *, receive_buffer: int | None = None, timeout: float = 5.0) -> RawWebSocket:
        """Open ``ws://host:port/path?query`` and complete the handshake; read nothing more.

        ``receive_buffer`` sets ``SO_RCVBUF`` before connecting, so the TCP window stays small.
        """
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setblocking(False)
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (host, port))
                key = base64.b64encode(os.urandom(16))
                request = (
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                )
                await loop.sock_sendall(sock, request.encode())
                response = bytearray()
                while b"\r\n\r\n" not in response:
                    # One byte at a time: not a byte of the first frame is read with the headers.
                    chunk = await loop.sock_recv(sock, 1)
                    if not chunk:
                        raise HandshakeFailed(f"connection closed during the handshake: {bytes(response)!r}")
                    response += chunk
        except BaseException:
            sock.close()
            raise
        head, _, rest = bytes(response).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        if not lines[0].startswith("HTTP/1.1 101") or headers.get("sec-websocket-accept") != accept:
            sock.close()
            raise HandshakeFailed(lines[0])
        return cls(sock, rest)

    async def _fill(self, size: int) -> None:
        loop = asyncio.get_running_loop()
        while len(self._buffer) < size:
            chunk = await loop.sock_recv(self.sock, 65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self._buffer += chunk

    async def _take(self, size: int) -> bytes:
        await self._fill(size)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read_frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload)."""
        first, second = await self._take(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._take(8))
        return first & 0x0F, await self._take(length)

    async def read_until_close(self, timeout: float) -> tuple[int | None, list[bytes]]:
        """Read frames until a close frame; return its code and the text payloads before it."""
        texts: list[bytes] = []
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.read_frame()
                if opcode == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    return code, texts
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
