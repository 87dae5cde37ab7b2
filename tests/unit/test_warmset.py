"""What warm-up keeps of the records it reads: the newest position per device, and the window."""

from __future__ import annotations

import json
from typing import NamedTuple

from siscom.core import cursors
from siscom.core.cursors import LogPositions
from siscom.core.protocol import frame_cursor
from siscom.core.warmset import SNAPSHOT_TOPIC, WarmSet
from siscom.core.window import RecentWindow


class Record(NamedTuple):
    offset: int
    timestamp: int
    value: bytes | None


def value(device: str, seq: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device, "SEQ": seq, "LAT": 1.0, "LON": 2.0}}).encode()


def warm_set(records: int = 100, window_bytes: int = 1 << 20, alerts: int | None = None) -> WarmSet:
    return WarmSet(alerts_index=alerts, window_records=records, window_bytes=window_bytes, max_record_bytes=1 << 20)


def seqs(deliveries) -> list[tuple[str, int]]:
    return [(d.device_id, json.loads(d.text)["data"]["data"]["SEQ"]) for d in deliveries]


def test_the_newest_position_of_a_device_is_decided_by_kafka_timestamp_across_partitions():
    warm = warm_set()
    warm.add(0, 0, [Record(0, 1000, value("a", 1)), Record(1, 3000, value("a", 3))])
    warm.add(0, 1, [Record(0, 2000, value("a", 2)), Record(1, 4000, value("b", 1))])
    result = warm.finish(LogPositions(["t"]), {(0, 0): 2, (0, 1): 2})
    assert sorted(seqs(result.snapshot)) == [("a", 3), ("b", 1)]


def test_the_last_positions_topic_fills_devices_and_loses_to_a_newer_log_record():
    warm = warm_set()
    warm.add(SNAPSHOT_TOPIC, 0, [Record(7, 500, value("old", 9)), Record(8, 2500, value("a", 0))])
    warm.add(0, 0, [Record(0, 1000, value("a", 1))])
    result = warm.finish(LogPositions(["t"]), {(0, 0): 1})
    assert sorted(seqs(result.snapshot)) == [("a", 0), ("old", 9)]
    old = next(d for d in result.snapshot if d.device_id == "old")
    assert (old.partition, old.offset) == (-1, -1)  # in no cursor, never resumed from
    assert seqs(result.window) == [("a", 1)]  # the last-positions topic is never in the window


def test_malformed_records_are_counted_and_skipped():
    warm = warm_set()
    warm.add(0, 0, [Record(0, 1, b"not json"), Record(1, 2, None), Record(2, 3, value("a", 1))])
    result = warm.finish(LogPositions(["t"]), {(0, 0): 3})
    assert result.malformed == 2
    assert seqs(result.snapshot) == [("a", 1)]


def test_the_window_keeps_the_newest_records_as_a_suffix_of_every_partition_and_its_cursors_resume():
    positions = LogPositions(["t"])
    warm = warm_set(records=4)
    warm.add(0, 0, [Record(o, 100 + 10 * o, value("a", o)) for o in range(5)])  # 100..140
    warm.add(0, 1, [Record(o, 105 + 10 * o, value("b", o)) for o in range(5)])  # 105..145
    result = warm.finish(positions, {(0, 0): 5, (0, 1): 5})
    assert seqs(result.window) == [("a", 3), ("b", 3), ("a", 4), ("b", 4)]
    assert positions.vector() == ((5, 5),)
    assert cursors.decode(result.cursor)[1] == ((5, 5),)
    # Each frame's cursor is the vector just after it, in the order the window holds them.
    assert [cursors.decode(frame_cursor(d.text))[1] for d in result.window] == [
        ((4, 3),),
        ((4, 4),),
        ((5, 4),),
        ((5, 5),),
    ]
    window = RecentWindow(100, 1 << 20)
    window.extend(result.window)
    window.progressed(result.cursor)
    assert window.covers(((3, 3),)) and not window.covers(((2, 3),))
    assert seqs(window.after(((4, 3),))) == [("b", 3), ("a", 4), ("b", 4)]


def test_a_partition_whose_older_record_left_the_window_keeps_only_what_follows_it():
    """Timestamps out of order in a partition: the window still holds a suffix of it."""
    warm = warm_set(records=2)
    warm.add(0, 0, [Record(0, 300, value("a", 0)), Record(1, 100, value("a", 1)), Record(2, 200, value("a", 2))])
    result = warm.finish(LogPositions(["t"]), {(0, 0): 3})
    assert seqs(result.window) == [("a", 2)]


def test_alerts_go_to_the_window_only_and_memory_is_bounded_by_the_window():
    warm = warm_set(records=10, alerts=1)
    warm.add(1, 0, [Record(o, o, value("a", o)) for o in range(1000)])
    assert len(warm._tail) == 10
    result = warm.finish(LogPositions(["t", "alerts"]), {(1, 0): 1000})
    assert result.snapshot == []
    assert [d.alert for d in result.window] == [True] * 10
    assert seqs(result.window)[0] == ("a", 990)


def test_an_empty_lookback_leaves_the_cursor_at_the_ends():
    positions = LogPositions(["t"])
    result = warm_set().finish(positions, {(0, 0): 42, (0, 1): 7})
    assert result.snapshot == [] and result.window == []
    assert cursors.decode(result.cursor)[1] == ((42, 7),)


def test_a_record_that_names_its_device_at_its_start_but_is_broken_further_on_is_counted_not_served():
    warm = warm_set()
    warm.add(0, 0, [Record(0, 1, value("a", 1)), Record(1, 2, b'{"data":{"DEVICE_ID":"a","SEQ":2')])
    warm.add(0, 1, [Record(0, 1, value("b", 1)), Record(1, 2, b'{"data":{"DEVICE_ID":"b"},"data":{"DEVICE_ID":"c"}}')])
    result = warm.finish(LogPositions(["t"]), {(0, 0): 2, (0, 1): 2})
    assert result.malformed == 1
    # "b"'s hint named b; the record (duplicate keys: the last wins, as in the live decoder) is c's.
    assert sorted(d.device_id for d in result.snapshot) == ["c"]
