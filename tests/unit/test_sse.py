"""The stream as Server-Sent Events, without I/O: each frame's event, the cache that shares it, the
``Accept`` check, and the client-side parser the tests and load clients read the wire with."""

from __future__ import annotations

import json
import timeit

import pytest

from bench.eventstream import BodyDecoder, EventParser, take_head
from siscom.core.protocol import error_frame, message_frame, ping_frame, resumed_frame
from siscom.core.sse import EventCache, accepts_event_stream, encode_event, retry_field

CURSOR = "AQIDBAUGBwgJ"


def parsed(data: bytes):
    return EventParser().feed(data)


def test_a_frame_with_a_cursor_is_one_event_with_that_id_and_the_frame_text_as_data():
    text = message_frame('{"data":{"DEVICE_ID":"a"}}', CURSOR)
    assert encode_event(text) == b"id: " + CURSOR.encode() + b"\ndata: " + text.encode() + b"\n\n"
    assert encode_event(ping_frame(CURSOR)).startswith(b"id: " + CURSOR.encode() + b"\ndata: ")


def test_frames_without_a_cursor_have_no_id_line_so_the_browser_keeps_the_last_id():
    for text in (resumed_frame(True), error_frame("token expired"), ping_frame(None)):
        assert encode_event(text) == b"data: " + text.encode() + b"\n\n"
    parser = EventParser()
    parser.feed(encode_event(message_frame("{}", CURSOR)) + encode_event(error_frame("x")))
    assert parser.last_event_id == CURSOR


def test_a_value_written_on_several_lines_becomes_several_data_lines_that_parse_to_the_same_object():
    value = '{\r\n  "data": {"DEVICE_ID": "a",\n "X": "line\\nbreak"}\r}'
    text = message_frame(value, CURSOR)
    event = encode_event(text)
    assert event.count(b"data: ") == 4 and b"\r" not in event  # four lines, four data lines
    (received,) = parsed(event)
    assert received.id == CURSOR
    assert json.loads(received.data) == json.loads(text)


def test_non_ascii_text_is_sent_as_utf_8():
    text = message_frame('{"data":{"DEVICE_ID":"a","NAME":"Pe\u00f1a \u2192 \U0001f68c"}}', CURSOR)
    (received,) = parsed(encode_event(text))
    assert received.data == text


def test_the_retry_field_sets_the_reconnect_delay_and_dispatches_nothing():
    parser = EventParser()
    assert retry_field(2500) == b"retry: 2500\n\n"
    assert parser.feed(retry_field(2500)) == [] and parser.retry == 2500


def test_the_cache_gives_every_recipient_the_same_bytes_object_for_one_frame():
    cache = EventCache()
    text = message_frame('{"data":{"DEVICE_ID":"a"}}', CURSOR)
    first = cache.event(text)
    assert cache.event(text) is first
    assert cache.event("".join([text])) is first  # an equal text built elsewhere, too
    assert (cache.hits, cache.misses) == (2, 1)
    assert cache.events([text, text]) == first * 2


def test_the_cache_drops_the_oldest_events_past_its_bytes_and_never_holds_one_bigger_than_that():
    cache = EventCache(max_bytes=1000)
    texts = [message_frame('{"N":%d,"PAD":"%s"}' % (n, "x" * 100), CURSOR) for n in range(30)]
    for text in texts:
        cache.event(text)
    assert cache.bytes <= 1000 and 0 < len(cache) < 30
    assert cache.event(texts[-1]) is cache.event(texts[-1])  # the newest are held
    huge = message_frame('{"PAD":"%s"}' % ("x" * 2000), CURSOR)
    assert cache.event(huge) == encode_event(huge)
    assert cache.bytes <= 1000


@pytest.mark.parametrize(
    ("accept", "wanted"),
    [
        ("text/event-stream", True),
        ("text/html, Text/Event-Stream;q=0.5", True),
        ("text/event-stream; q=0", False),
        ("text/event-stream;q=zero", False),
        ("*/*", False),
        ("text/*", False),
        ("", False),
        (None, False),
    ],
)
def test_only_an_accept_header_that_names_the_event_stream_asks_for_one(accept, wanted):
    assert accepts_event_stream(accept) is wanted


def test_the_client_parser_reads_crlf_and_cr_line_ends_comments_and_events_split_across_reads():
    parser = EventParser()
    stream = b": comment\r\nid: 7\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\rdata: d\n\n"
    events = []
    for n in range(len(stream)):  # one byte at a time
        events += parser.feed(stream[n : n + 1])
    assert [(e.id, e.data) for e in events] == [("7", "a\nb"), (None, "c"), (None, "d")]
    assert parser.last_event_id == "7"


def test_the_client_decodes_a_chunked_body_fed_in_pieces():
    buffer = bytearray(b"HTTP/1.1 200 \r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n")
    head = take_head(buffer)
    assert head is not None and head.status == 200 and head.chunked
    body = b"5\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n0\r\n\r\n"
    decoder = BodyDecoder(head)
    out = b"".join(decoder.feed(body[n : n + 3]) for n in range(0, len(body), 3))
    assert out == b"hello" + b"x" * 26 and decoder.done


def test_sharing_one_encoding_costs_1000_recipients_less_than_encoding_for_each():
    """Why frames are encoded once per process (run with -s for the figures)."""
    value = json.dumps(
        {
            "data": {
                "DEVICE_ID": "0848086072",
                "LAT": -12.04,
                "LNG": -77.03,
                "SPEED": 42.5,
                "HEADING": 180,
                "TS": "2026-12-01T20:00:00Z",
                "IGNITION": True,
            }
        }
    )
    text = message_frame(value, CURSOR * 2)
    recipients = 1000
    cache = EventCache()

    def best(run) -> float:
        return min(timeit.repeat(run, number=1, repeat=20))

    each = best(lambda: [encode_event(text) for _ in range(recipients)])
    shared = best(lambda: [cache.event(text) for _ in range(recipients)])
    print(
        f"\n{recipients} SSE recipients of a {len(text)}-byte frame: encoded for each {each * 1e3:.2f} ms, "
        f"one shared encoding {shared * 1e3:.2f} ms"
    )
    assert shared < each / 2
