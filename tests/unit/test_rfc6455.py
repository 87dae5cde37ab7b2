"""The bare RFC 6455 client codec under the benchmark's load clients and the chaos tests' raw
client: checked here without sockets, since both rely on it to count frames right."""

from __future__ import annotations

import base64
import hashlib

import pytest

from bench.rfc6455 import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    RSV1,
    ClientHandshake,
    HandshakeFailed,
    close_code,
    masked_frame,
    split_frames,
    take_head,
)


def server_frame(payload: bytes, opcode: int = OP_TEXT, rsv1: bool = False) -> bytes:
    """An unmasked frame as a server sends it, with the shortest length encoding."""
    first = 0x80 | (RSV1 if rsv1 else 0) | opcode
    length = len(payload)
    if length < 126:
        head = bytes([first, length])
    elif length < 1 << 16:
        head = bytes([first, 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([first, 127]) + length.to_bytes(8, "big")
    return head + payload


def unmask(frame: bytes) -> tuple[int, bytes]:
    """Decode a client frame the way a server must: read the length, then unmask with the key."""
    assert frame[1] & 0x80, "client frames are masked"
    length, start = frame[1] & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(frame[2:10], "big"), 10
    key, body = frame[start : start + 4], frame[start + 4 :]
    assert len(body) == length
    return frame[0], bytes(byte ^ key[index % 4] for index, byte in enumerate(body))


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
def test_every_length_encoding_comes_back_whole_from_a_stream_fed_one_byte_at_a_time(size):
    payload = bytes(index % 251 for index in range(size))
    stream = server_frame(payload) + server_frame(b"next", OP_PING)
    buffer, frames = bytearray(), []
    for index in range(len(stream)):
        buffer += stream[index : index + 1]
        frames += split_frames(buffer)
    assert frames == [(0x80 | OP_TEXT, payload), (0x80 | OP_PING, b"next")]
    assert buffer == bytearray()


def test_an_incomplete_frame_stays_in_the_buffer_after_the_complete_ones():
    stream = server_frame(b"one") + server_frame(b"two", rsv1=True)
    buffer = bytearray(stream[:-1])
    (first,) = split_frames(buffer)
    assert first == (0x80 | OP_TEXT, b"one")
    assert bytes(buffer) == stream[len(server_frame(b"one")) : -1]
    buffer += stream[-1:]
    ((flags, payload),) = split_frames(buffer)
    assert payload == b"two" and flags & RSV1 and flags & 0x0F == OP_TEXT


@pytest.mark.parametrize("size", [0, 3, 125, 126, 65536])
def test_client_frames_are_masked_and_unmask_to_the_payload(size):
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    first, unmasked = unmask(masked_frame(payload, OP_PING))
    assert first == 0x80 | OP_PING
    assert unmasked == payload


def test_a_close_frame_without_a_code_reads_as_1005():
    assert close_code(b"") == 1005
    assert close_code((1013).to_bytes(2, "big") + b"try again later") == 1013


def accepting_head(handshake: ClientHandshake, extra: str = "") -> bytes:
    accept = base64.b64encode(hashlib.sha1(handshake.key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept.decode()}{extra}"
    ).encode()


def test_the_handshake_asks_for_deflate_only_when_told_and_sees_whether_the_server_agreed():
    plain = ClientHandshake("127.0.0.1", 8000, "/api/v1/stream?device_ids=a,b")
    assert plain.request.startswith(b"GET /api/v1/stream?device_ids=a,b HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n")
    assert b"permessage-deflate" not in plain.request and plain.request.endswith(b"\r\n\r\n")
    assert plain.accept(accepting_head(plain)) is False

    deflate = ClientHandshake("127.0.0.1", 8000, "/", deflate=True)
    assert b"Sec-WebSocket-Extensions: permessage-deflate" in deflate.request
    assert deflate.accept(accepting_head(deflate, "\r\nSec-WebSocket-Extensions: permessage-deflate")) is True


def test_a_refusal_or_a_wrong_accept_key_fails_the_handshake():
    handshake = ClientHandshake("127.0.0.1", 8000, "/")
    with pytest.raises(HandshakeFailed, match="403 Forbidden"):
        handshake.accept(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0")
    other = ClientHandshake("127.0.0.1", 8000, "/")
    with pytest.raises(HandshakeFailed, match="Sec-WebSocket-Accept"):
        handshake.accept(accepting_head(other))


def test_the_response_head_is_taken_from_the_buffer_and_the_first_frame_left_there():
    buffer = bytearray(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket")
    assert take_head(buffer) is None
    buffer += b"\r\n\r\n" + server_frame(b"hello")
    assert take_head(buffer) == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket"
    assert split_frames(buffer) == [(0x80 | OP_TEXT, b"hello")]
    with pytest.raises(HandshakeFailed, match="too large"):
        take_head(bytearray(b"x" * 20_000))


def test_a_close_frame_from_a_client_carries_its_code():
    first, payload = unmask(masked_frame((1000).to_bytes(2, "big"), OP_CLOSE))
    assert first & 0x0F == OP_CLOSE and close_code(payload) == 1000
