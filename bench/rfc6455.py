"""The client side of RFC 6455, sans I/O: the opening handshake and the frame codec.

Just enough protocol for clients that must be cheaper or ruder than a library allows: the
benchmark's load clients (thousands of them, on the cores of the server they measure) and the
tests' clients that stall or reset the connection mid-frame. Both do their own I/O around it.

Server frames are never masked and clients' always are (section 5.1); fragmented messages are
not reassembled (the servers these clients talk to send each message in one frame).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

__all__ = [
    "FIN",
    "MAX_HEAD",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "RSV1",
    "ClientHandshake",
    "HandshakeFailed",
    "DEFLATE_TAIL",
    "close_code",
    "masked_frame",
    "split_frames",
    "take_head",
]

#: Opcodes (section 5.2).
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
#: Bits of a frame's first byte: the last frame of a message; a compressed message (RFC 7692).
FIN, RSV1 = 0x80, 0x40

#: Largest HTTP response head accepted during the handshake.
MAX_HEAD = 16 * 1024

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The tail a permessage-deflate sender strips from each message (RFC 7692, section 7.2.1).
DEFLATE_TAIL = b"\x00\x00\xff\xff"


class HandshakeFailed(ConnectionError):
    """The server did not switch protocols."""


class ClientHandshake:
    """One opening handshake: the request to send, and the check of the server's answer."""

    def __init__(self, host: str, port: int, path: str, *, deflate: bool = False) -> None:
        self.key = base64.b64encode(os.urandom(16))
        self.request = (
            f"GET {path} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key.decode()}\r\n"
            # No window-bits parameters: the server then keeps its full window, as browsers ask.
            + ("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else "")
            + "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def accept(self, head: bytes) -> bool:
        """Check the response head (without its blank line); True if the server agreed to deflate.

        Raises :class:`HandshakeFailed` unless it is a 101 with the right ``Sec-WebSocket-Accept``.
        """
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
        }
        expected = base64.b64encode(hashlib.sha1(self.key + _GUID).digest()).decode()
        if lines[0].split(" ", 2)[1:2] != ["101"]:
            raise HandshakeFailed(lines[0])
        if headers.get("sec-websocket-accept") != expected:
            raise HandshakeFailed(f"{lines[0]}, but Sec-WebSocket-Accept is not the answer to the key")
        return "permessage-deflate" in headers.get("sec-websocket-extensions", "").lower()


def take_head(buffer: bytearray) -> bytes | None:
    """Remove an HTTP head and its blank line from the start of `buffer` and return the head.

    None while the head is incomplete; :class:`HandshakeFailed` once it is longer than
    :data:`MAX_HEAD`.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise HandshakeFailed("response head too large")
        return None
    head = bytes(buffer[:end])
    del buffer[: end + 4]
    return head


def split_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove every complete server frame from the start of `buffer`.

    Returns ``(first byte, payload)`` per frame, in order: ``first & 0x0F`` is the opcode,
    ``first & RSV1`` marks a compressed message. An incomplete frame stays in the buffer.
    The benchmark's clients call this for every chunk they receive: one pass, no copies but
    the payloads.
    """
    frames = []
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
        frames.append((first, bytes(buffer[start:end])))
        offset = end
    if offset:
        del buffer[:offset]
    return frames


def masked_frame(payload: bytes = b"", opcode: int = OP_TEXT) -> bytes:
    """One final client frame; clients must mask what they send, so it is masked (fresh key)."""
    key = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", FIN | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", FIN | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", FIN | opcode, 0x80 | 127, length)
    repeated = (key * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
    return head + key + masked


def close_code(payload: bytes) -> int:
    """The status code of a close frame's payload; 1005 (section 7.1.5) when it has none."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
