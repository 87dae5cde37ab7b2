"""The benchmark's SSE decoder: the data of every event, however the bytes are cut.

The load clients read thousands of streams, so the decoder takes whatever a socket read hands it:
a response head and chunks split anywhere, several events in one chunk, an event across chunks.
"""

from __future__ import annotations

import pytest

from bench.sse import EventStreamDecoder, StreamRefused

HEAD = (
    b"HTTP/1.1 200 \r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\ntransfer-encoding: chunked\r\n\r\n"
)
EVENTS = [
    b"retry: 2000\n\n",
    b'id: c1\ndata: {"event":"message","id":"c1","data":{"x":1}}\n\n',
    b": a comment\n\n",
    b'id: c2\ndata:{"event":"ping","id":"c2"}\n\nid: c3\ndata: {"event":"alert","id":"c3"}\r\n\r\n',
]
PAYLOADS = [
    b'{"event":"message","id":"c1","data":{"x":1}}',
    b'{"event":"ping","id":"c2"}',
    b'{"event":"alert","id":"c3"}',
]


def chunked(parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def feed_in_pieces(decoder: EventStreamDecoder, data: bytes, size: int) -> list[bytes]:
    out = []
    for at in range(0, len(data), size):
        out += decoder.feed(data[at : at + size])
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_every_events_data_comes_out_once_in_order_however_the_reads_cut_the_bytes(size):
    decoder = EventStreamDecoder()
    assert feed_in_pieces(decoder, HEAD + chunked(EVENTS), size) == PAYLOADS
    assert decoder.opened and decoder.ended


def test_an_event_split_across_chunks_is_joined_before_its_data_is_handed_over():
    decoder = EventStreamDecoder()
    text = b"".join(EVENTS)
    parts = [text[:30], text[30:31], text[31:90], text[90:]]
    assert decoder.feed(HEAD + chunked(parts)) == PAYLOADS


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 400 \r\ncontent-type: application/json\r\n\r\n",
        b"HTTP/1.1 503 \r\nretry-after: 5\r\n\r\n",
        b"HTTP/1.1 200 \r\ncontent-type: text/html\r\n\r\n",
    ],
)
def test_anything_but_a_200_event_stream_is_refused(head):
    with pytest.raises(StreamRefused):
        EventStreamDecoder().feed(head)


def test_a_chunk_size_that_is_not_hexadecimal_is_refused():
    with pytest.raises(StreamRefused):
        EventStreamDecoder().feed(HEAD + b"zz\r\ndata: x\n\r\n")
