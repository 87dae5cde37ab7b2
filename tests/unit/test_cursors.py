"""Cursor encoding, the recent-records window and the resume verdict: pure logic, no I/O."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siscom.core import cursors
from siscom.core.deliveries import Delivery
from siscom.core.protocol import BadRequest, message_frame
from siscom.core.resume import Source, judge, parse_resume, parse_time
from siscom.core.window import RecentWindow

CRC = cursors.topics_crc(["positions", "alerts"])

vectors = st.lists(
    st.lists(st.integers(min_value=-1, max_value=2**62), min_size=0, max_size=60).map(tuple), min_size=1, max_size=3
).map(tuple)


@given(vectors)
def test_every_vector_survives_encoding_and_decoding(vector):
    text = cursors.encode(CRC, vector)
    assert cursors.decode(text) == (CRC, vector)
    assert text.isascii() and '"' not in text and "=" not in text


def busy_vector(partitions: int, around: int = 50_000_000) -> cursors.Vector:
    """A busy topic's offsets: tens of millions, partitions within a few thousand of each other."""
    return (tuple(around + (p * 7919) % 4000 for p in range(partitions)), tuple(around // 100 + p for p in range(3)))


@pytest.mark.parametrize("partitions, most_chars", [(3, 40), (12, 70), (48, 170)])
def test_a_cursor_stays_short_as_partitions_grow(partitions, most_chars):
    text = cursors.encode(CRC, busy_vector(partitions))
    print(f"cursor for {partitions} position partitions + 3 alert partitions: {len(text)} characters")
    assert len(text) <= most_chars


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64!",
        "A" * (cursors.MAX_CURSOR_CHARS + 1),
        "AQ",
        "Ag" + "A" * 10,
        cursors.encode(CRC, ((5, 300),))[:-2],
    ],
    ids=["empty", "garbage", "oversized", "no body", "other version", "truncated"],
)
def test_text_that_is_not_a_cursor_is_refused(text):
    with pytest.raises(cursors.CursorError):
        cursors.decode(text)


def test_a_malformed_cursor_is_a_bad_request_and_one_for_other_topics_is_not():
    with pytest.raises(BadRequest):
        parse_resume("###", None, topics_crc=CRC, now_ms=0, max_seconds=60)
    other = parse_resume(cursors.encode(CRC + 1, ((1,),)), None, topics_crc=CRC, now_ms=0, max_seconds=60)
    assert other is not None and other.vector == ()


def test_since_takes_rfc3339_or_milliseconds_and_refuses_further_back_than_allowed():
    assert parse_time("1700000000000") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_time("2023-11-14T23:13:20.5+01:00") == 1_700_000_000_500
    for bad in ("yesterday", "2023-11-14", "2023-11-14T22:13:20"):
        with pytest.raises(BadRequest):
            parse_time(bad)
    with pytest.raises(BadRequest, match="STREAM_REPLAY_MAX_SECONDS"):
        parse_resume(None, "1000", topics_crc=CRC, now_ms=100_000, max_seconds=60)
    request = parse_resume(None, "50000", topics_crc=CRC, now_ms=100_000, max_seconds=60)
    assert request is not None and request.since_ms == 50_000


def test_the_verdict_says_where_the_missed_records_come_from():
    routed = ((10, 20),)
    assert judge((), routed, True).source is Source.LOST
    assert judge(((1, 2, 3),), routed, True).reason == "the cursor names partitions that no longer exist"
    assert judge(((11, 20),), routed, True).source is Source.AHEAD
    assert judge(((5, 20),), routed, True).source is Source.WINDOW
    assert judge(((5, 20),), routed, False).source is Source.KAFKA
    assert judge(((5, 20),), None, False).source is Source.AHEAD


def delivery(partition: int, offset: int, vector: list[int], device: str = "a") -> Delivery:
    cursor = cursors.encode(CRC, (tuple(vector),))
    return Delivery(
        device,
        message_frame('{"n":%d}' % offset, cursor),
        False,
        1000 + offset,
        topic_index=0,
        partition=partition,
        offset=offset,
    )


def test_the_window_serves_cursors_back_to_its_oldest_record_and_no_further():
    window = RecentWindow(max_records=3, max_bytes=10_000)
    # Two partitions, dispatched alternately: p0@0, p1@0, p0@1, p1@1, p0@2.
    vector = [0, 0]
    batch = []
    for partition, offset in [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]:
        vector[partition] = offset + 1
        batch.append(delivery(partition, offset, vector))
    window.extend(batch)
    window.routed(batch[-1])
    assert len(window) == 3
    assert window.dispatched == cursors.encode(CRC, ((3, 2),))
    assert [(d.partition, d.offset) for d in window.after(((1, 1),))] == [(0, 1), (1, 1), (0, 2)]
    assert window.covers(((1, 1),)) and window.covers(((3, 2),))
    assert not window.covers(((0, 1),)), "p0@0 has left the window"
    assert not window.covers(((1, 0),)), "p1@0 has left the window"


def test_records_held_in_the_window_add_no_objects_for_the_garbage_collector_to_walk():
    """Every full collection walks every tracked object with the event loop stopped; a window of
    tens of thousands of records renewed at the record rate must not be among them."""
    window = RecentWindow(max_records=5_000, max_bytes=10_000_000)
    RecentWindow(10, 10_000).extend([delivery(0, 0, [1])])  # first-use caches, outside the count
    gc.collect()
    before = len(gc.get_objects())
    window.extend(
        delivery(0, offset, [offset + 1], f"d{offset % 500}")._replace(position=(-12.0 - offset / 1e4, -77.0))
        for offset in range(2_000)
    )
    gc.collect()
    gc.collect()  # a tuple is untracked once what it holds is: nested ones may take a second pass
    assert len(gc.get_objects()) - before < 100, "the window's records are tracked by the collector"
    assert [d.offset for d in window.after(((1_998,),))] == [1_998, 1_999]
    assert window.oldest_timestamp_ms() == 1000


def test_the_window_forgets_everything_when_a_log_is_replaced():
    window = RecentWindow(max_records=10, max_bytes=10_000)
    window.extend([delivery(0, 5, [6]), delivery(0, 6, [7])])
    window.extend([delivery(0, 0, [1])])  # the log starts over
    assert [(d.offset) for d in window.after(((0,),))] == [0]
    assert window.covers(((0,),))  # a cursor past the new log is judged ahead, not served


def test_the_window_is_bounded_by_bytes_too():
    window = RecentWindow(max_records=1000, max_bytes=200)
    window.extend([delivery(0, n, [n + 1]) for n in range(20)])
    assert window.bytes <= 200 and 0 < len(window) < 20


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 20), st.integers(0, 2**40)), max_size=60))
def test_positions_advanced_record_by_record_encode_like_their_vector(steps):
    positions = cursors.LogPositions(["positions", "alerts"])
    for topic, partition, offset in steps:
        positions.advance(topic, partition, offset)
        assert cursors.decode(positions.cursor()) == (CRC, positions.vector())


def test_the_window_learns_where_partitions_start_that_it_did_not_know_when_it_began():
    """At start, the first records can come before reading has begun on every partition: the
    window must not then send every later resume to Kafka."""
    window = RecentWindow(max_records=100, max_bytes=100_000)
    window.extend([delivery(1, 0, [-1, 1])])  # partition 0 unknown yet
    assert not window.covers(((0, 1),))
    window.extend([delivery(0, 7, [8, 1])])  # reading partition 0 started at 7
    assert window.covers(((7, 1),)) and window.covers(((8, 1),))
    assert not window.covers(((6, 1),))


def test_before_any_record_the_window_takes_where_reading_starts_as_dispatch_cursor_and_base():
    """An idle topic: pings must name where reading starts, and a cursor naming it be served."""
    window = RecentWindow(max_records=100, max_bytes=100_000)
    start = cursors.encode(CRC, ((100, 40),))
    window.progressed(start)
    assert window.dispatched == start
    assert window.covers(((100, 40),)) and not window.covers(((99, 40),))
    assert list(window.after(((100, 40),))) == []
    window.extend([delivery(0, 100, [101, 40]), delivery(1, 40, [101, 41])])
    assert window.covers(((100, 40),))
    assert [(d.partition, d.offset) for d in window.after(((100, 40),))] == [(0, 100), (1, 40)]


@given(
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 3), st.sampled_from("abcdefgh")), min_size=1, max_size=120
    ),
    size=st.integers(1, 40),
    vector=st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 60)),
    ids=st.none() | st.frozensets(st.sampled_from("abcdefghz"), max_size=9),
)
def test_the_window_replays_from_a_cursor_exactly_what_a_scan_of_everything_held_finds(
    monkeypatch_compaction, steps, size, vector, ids
):
    """The per-partition and per-device indexes only find where to look; what a replay gets must
    be what scanning every held entry finds, through trims and compactions, for every device or
    for a few."""
    window = RecentWindow(max_records=size, max_bytes=10**9)
    offsets = [0, 0, 0]
    held: list[Delivery] = []
    for partition, gap, device in steps:
        offsets[partition] += gap  # offsets skip now and then (malformed records, other topics)
        routed = delivery(partition, offsets[partition], [o + 1 for o in offsets], device)
        window.extend([routed])
        held = (held + [routed])[-size:]
        cursor = ((vector[0], vector[1], vector[2]),)
        expected = [d for d in held if d.offset >= cursor[0][d.partition] and (ids is None or d.device_id in ids)]
        assert [d for d in window.steps_after(cursor, ids) if d is not None] == expected
    assert len(window) == len(held)


def test_a_replay_of_one_device_reads_its_entries_from_the_cursor_on_and_no_others():
    """Few devices of a full window: read through the devices' index (the property test above
    checks any mix against a scan; this pins the records at the cursor's edge)."""
    window = RecentWindow(max_records=100, max_bytes=10**9)
    window.extend(delivery(offset % 2, offset, [offset + 1, offset + 1], f"d{offset % 10}") for offset in range(100))
    steps = [d for d in window.steps_after(((0, 50),), frozenset({"d0", "d3"})) if d is not None]
    assert [(d.device_id, d.partition, d.offset) for d in steps] == [
        (f"d{offset % 10}", offset % 2, offset)
        for offset in range(100)
        if offset % 10 in (0, 3) and offset >= (0, 50)[offset % 2]
    ]
    assert [d.offset for d in steps][:3] == [0, 10, 20]  # partition 0 from 0, partition 1 from 50 on
    assert 53 in [d.offset for d in steps] and 43 not in [d.offset for d in steps]


@pytest.fixture(scope="module")
def monkeypatch_compaction():
    """Compact lists after two items gone instead of a thousand, so the examples reach it."""
    from siscom.core import window

    saved, window._COMPACT_AFTER = window._COMPACT_AFTER, 2
    yield
    window._COMPACT_AFTER = saved
