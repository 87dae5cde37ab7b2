"""The decoder actor: whatever a batch holds, each record becomes a frame or a counted reject."""

from __future__ import annotations

import asyncio
import json
import logging

from aiokafka import ConsumerRecord, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from siscom.core import cursors
from siscom.core.deliveries import Progress
from siscom.core.protocol import alert_frame, frame_cursor, message_frame
from siscom.metrics import Metrics
from siscom.pipeline.decoder import MALFORMED_LOG_PER_SECOND, Decoder
from siscom.pipeline.offsets import ReadOffsets
from supervisors import Mailbox

TOPIC, ALERTS = "positions", "alerts"
MAX_BYTES = 200


def record(value: bytes | None, topic: str = TOPIC, offset: int = 0) -> ConsumerRecord:
    size = len(value) if value is not None else -1
    return ConsumerRecord(topic, 0, offset, 1_700_000_000_000, 0, None, value, None, -1, size, ())


async def decode(records: list[ConsumerRecord]) -> tuple[list, Metrics]:
    inbox: Mailbox = Mailbox()
    out: Mailbox = Mailbox()
    metrics = Metrics()
    decoder = Decoder(inbox, out, alerts_topic=ALERTS, max_record_bytes=MAX_BYTES, metrics=metrics)
    await decoder.receive(records)
    frames = [frame for batch in out.drain() for frame in batch]
    return frames, metrics


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
device_ids = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans())
documents = st.one_of(
    st.builds(
        lambda d, extra: {"data": {"DEVICE_ID": d, **extra}},
        device_ids,
        st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    ),
    st.builds(lambda d: {"device_id": d}, device_ids),
    json_values,
)
values = st.one_of(
    st.none(),
    st.binary(max_size=2 * MAX_BYTES),
    documents.map(lambda document: json.dumps(document).encode()),
    documents.map(lambda document: json.dumps(document, ensure_ascii=False).encode("utf-8")),
)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(st.tuples(values, st.sampled_from([TOPIC, ALERTS])), max_size=25))
def test_any_batch_gives_a_frame_or_a_counted_reject_per_record_and_never_raises(batch):
    records = [record(value, topic, offset) for offset, (value, topic) in enumerate(batch)]
    logging.disable(logging.WARNING)  # the malformed-record warnings are not what this checks
    try:
        frames, metrics = asyncio.run(decode(records))
    finally:
        logging.disable(logging.NOTSET)
    assert len(frames) + metrics.counters["malformed_records"] == len(records)
    assert metrics.counters["records"] == len(records)
    assert metrics.counters["alerts"] == sum(frame.alert for frame in frames)
    # The frames carry values of the batch, unchanged, in the batch's order.
    remaining = iter(frames)
    expected = next(remaining, None)
    for source in records:
        if expected is None or source.value is None:
            continue
        make_frame = alert_frame if source.topic == ALERTS else message_frame
        if expected.text == make_frame(source.value.decode("utf-8", "replace")):
            assert expected.alert == (source.topic == ALERTS)
            expected = next(remaining, None)
    assert expected is None, f"a frame that no record of the batch explains: {expected}"


async def test_a_bad_record_does_not_stop_the_good_ones_behind_it(caplog):
    good = json.dumps({"data": {"DEVICE_ID": "a"}}).encode()
    frames, metrics = await decode(
        [record(b"\xff"), record(good, offset=1), record(b"{", offset=2), record(good, offset=3)]
    )
    assert [frame.device_id for frame in frames] == ["a", "a"]
    assert metrics.counters["malformed_records"] == 2
    assert "positions[0]@0 (not UTF-8" in caplog.text and "positions[0]@2 (not JSON" in caplog.text


async def test_malformed_records_are_logged_at_most_so_many_times_a_second(caplog):
    _, metrics = await decode([record(b"nope", offset=n) for n in range(3 * MALFORMED_LOG_PER_SECOND)])
    assert metrics.counters["malformed_records"] == 3 * MALFORMED_LOG_PER_SECOND
    # Within one second of the clock (a batch may straddle two), never more than twice the rate.
    assert MALFORMED_LOG_PER_SECOND <= len(caplog.records) <= 2 * MALFORMED_LOG_PER_SECOND


async def test_an_empty_batch_after_start_offsets_were_noted_moves_the_dispatch_cursor_to_them():
    """The consumer's empty batch says where reading starts; with no record to carry it, the
    decoder hands the router a Progress, so an idle client's pings name every partition."""
    offsets = ReadOffsets()
    for partition, start in ((0, 100), (1, 7)):
        offsets.reached(TopicPartition(TOPIC, partition), start)
    offsets.reached(TopicPartition(ALERTS, 0), 3)
    positions = cursors.LogPositions([TOPIC, ALERTS])
    out: Mailbox = Mailbox()
    decoder = Decoder(
        Mailbox(),
        out,
        alerts_topic=ALERTS,
        max_record_bytes=MAX_BYTES,
        metrics=Metrics(),
        positions=positions,
        offsets=offsets,
    )
    await decoder.receive([])
    (progress,) = out.drain()
    assert isinstance(progress, Progress)
    assert cursors.decode(progress.cursor)[1] == ((100, 7), (3,))
    await decoder.receive([])
    assert out.drain() == [], "nothing new: nothing to tell"
    await decoder.receive([record(b'{"data":{"DEVICE_ID":"a"}}', offset=100)])
    (batch,) = out.drain()
    assert cursors.decode(frame_cursor(batch[0].text) or "")[1] == ((101, 7), (3,))
