"""The seam between the log and a resumed stream, with the log faked (issue 21, item 7).

- :class:`HistoryReader` with a fake Kafka consumer: requests that share a round each get
  exactly their own range, and every record is decoded once for all of them;
- :class:`Replayer` with a fake reader: records routed while its read waited follow the replay
  (``resumed``, the log's records, then the live one, none twice);
- properties: any cut of a log (where the client's cursor stands, where the read's end is fixed,
  what is routed while it reads) joins the live stream with no gap and no repeat, and a client
  cut off mid-replay resumes from its last frame's cursor exactly.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st
from support.settings import load

from siscom.core import cursors
from siscom.core.deliveries import Delivery
from siscom.core.protocol import alert_frame, message_frame
from siscom.core.records import decode_value
from siscom.core.replayfeed import LogSpan, ReplayFeed, SharedLog, log_entries, raw_record
from siscom.core.resume import ResumeRequest
from siscom.core.stream import StreamCore, StreamPolicy
from siscom.core.subscriptions import SubscriptionTable
from siscom.core.window import RecentWindow
from siscom.metrics import Metrics
from siscom.pipeline.history import HistoryReader
from siscom.sessions.replay import Replayer

TOPIC, ALERTS = "positions", "alerts"
TOPICS = (TOPIC, ALERTS)
CRC = cursors.topics_crc(TOPICS)
MAX_BYTES = 65536


@dataclass(frozen=True)
class Record:
    """What the reader reads of a Kafka record."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes


def raw(record: Record) -> tuple:
    return raw_record(record.offset, record.timestamp, record.value)


def value(device: str, seq: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device, "SEQ": seq}}).encode()


# HistoryReader, with a fake consumer


class FakeConsumer:
    """A consumer over an in-memory log: serves ``getmany`` a few records at a time, from where
    each assigned partition was sought."""

    def __init__(self, log: dict[TopicPartition, list[Record]], batch: int = 3) -> None:
        self.log = log
        self.batch = batch
        self._positions: dict[TopicPartition, int] = {}
        self.fetches = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._positions = {tp: 0 for tp in partitions}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int, max_records: int) -> dict:
        await asyncio.sleep(0)  # a fetch yields, as a real one does: requests arrive meanwhile
        self.fetches += 1
        out = {}
        for tp in partitions:
            records = [r for r in self.log[tp] if r.offset >= self._positions[tp]][: self.batch]
            if records:
                out[tp] = records
                self._positions[tp] = records[-1].offset + 1
        return out

    async def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.log[tp])


def a_log(partitions: int = 2, length: int = 12) -> dict[TopicPartition, list[Record]]:
    return {
        TopicPartition(TOPIC, p): [
            Record(TOPIC, p, o, 1000 + o, value(f"d{o % 3}", 100 * p + o)) for o in range(length)
        ]
        for p in range(partitions)
    }


def span_offsets(spans: dict[TopicPartition, LogSpan]) -> dict[TopicPartition, list[int]]:
    return {tp: span.offsets() for tp, span in spans.items()}


async def test_concurrent_reads_share_one_round_and_each_gets_exactly_its_range():
    log = a_log()
    consumer = FakeConsumer(log)
    reader = HistoryReader(
        load(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", KAFKA_TOPIC=TOPIC), Metrics(), consumer=lambda _: consumer
    )
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    try:
        first = asyncio.ensure_future(reader.read({p0: (2, 5), p1: (0, 3)}))
        second = asyncio.ensure_future(reader.read({p0: (4, 9)}))
        third = asyncio.ensure_future(reader.read({p0: (5, 5)}))  # empty: no read at all
        got = await asyncio.gather(first, second, third)
    finally:
        await reader.stop()
    assert span_offsets(got[0]) == {p0: [2, 3, 4], p1: [0, 1, 2]}
    assert span_offsets(got[1]) == {p0: [4, 5, 6, 7, 8]}
    assert got[2] == {}
    assert dict(reader.reads) == {p0: 1, p1: 1}, "one round for both"
    assert got[0][p0].log is got[1][p0].log, "one list of records, shared"


async def test_a_request_made_while_a_round_reads_waits_for_the_next_round_and_gets_its_range():
    consumer = FakeConsumer(a_log(partitions=1, length=30), batch=2)
    reader = HistoryReader(
        load(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", KAFKA_TOPIC=TOPIC), Metrics(), consumer=lambda _: consumer
    )
    p0 = TopicPartition(TOPIC, 0)
    try:
        first = asyncio.ensure_future(reader.read({p0: (0, 10)}))
        while consumer.fetches == 0:
            await asyncio.sleep(0)
        later = await reader.read({p0: (8, 20)})
        earlier = await first
    finally:
        await reader.stop()
    assert span_offsets(earlier) == {p0: list(range(10))}
    assert span_offsets(later) == {p0: list(range(8, 20))}
    assert reader.reads[p0] == 2


def test_a_shared_log_decodes_each_record_once_for_every_replay_and_skips_malformed_ones():
    records = [Record(TOPIC, 0, o, 1000 + o, value("d0", o)) for o in range(4)]
    records[2] = Record(TOPIC, 0, 2, 1002, b"not json")
    log = SharedLog([raw(r) for r in records], MAX_BYTES)
    decoded = decode_value(value("d0", 1), max_bytes=MAX_BYTES)
    assert log.entry(1) == (1, 1001, "d0", decoded.text, decoded.position)
    assert log.decoded == 2
    assert log.entry(2) is None
    assert log.entry(0)[0] == 0 and log.decoded == 3, "what one replay decoded, the next reuses"


# Replayer, with a fake reader


class FakeHistory:
    """The log as a fake reader serves it: ``read`` waits for ``release`` (what routes meanwhile
    is the test's to say)."""

    def __init__(self, log: list[Record]) -> None:
        self.log = log
        self.reading = asyncio.Event()
        self.release = asyncio.Event()
        self.ranges: dict[TopicPartition, tuple[int, int]] | None = None

    async def log_bounds(self, partitions):
        return {tp: 0 for tp in partitions}, {tp: self._end(tp) for tp in partitions}

    def _end(self, tp: TopicPartition) -> int:
        return sum(1 for r in self.log if (r.topic, r.partition) == (tp.topic, tp.partition))

    async def read(self, ranges):
        self.ranges = ranges
        self.reading.set()
        await self.release.wait()
        spans = {}
        for tp, (start, end) in ranges.items():
            if start < end:
                mine = [r for r in self.log if (r.topic, r.partition) == (tp.topic, tp.partition)]
                spans[tp] = LogSpan(SharedLog([raw(r) for r in mine], MAX_BYTES), start, end)
        return spans

    async def offsets_for_time(self, partitions, timestamp_ms):  # pragma: no cover - not asked here
        raise AssertionError("no since= here")


class Live:
    """The live side: the decoder's cursors and the router's hand-out, for a fake log."""

    def __init__(self, table: SubscriptionTable, window: RecentWindow, partitions: int) -> None:
        self.table = table
        self.window = window
        self.positions = cursors.LogPositions(TOPICS)
        for topic in range(len(TOPICS)):
            for partition in range(partitions if topic == 0 else 1):
                self.positions.advance(topic, partition, 0)
        window.progressed(self.positions.cursor())

    def route(self, record: Record) -> None:
        topic = TOPICS.index(record.topic)
        self.positions.advance(topic, record.partition, record.offset + 1)
        decoded = decode_value(record.value, max_bytes=MAX_BYTES)
        make = alert_frame if topic == 1 else message_frame
        delivery = Delivery(
            decoded.device_id,
            make(decoded.text, self.positions.cursor()),
            topic == 1,
            record.timestamp,
            decoded.position,
            topic,
            record.partition,
            record.offset,
        )
        named, everything = self.table.subscribers_of(delivery.device_id)
        for subscriber in (*named, *everything):
            subscriber.deliver(delivery, 0.0)
        self.window.extend([delivery])
        self.window.routed(delivery)


def policy(bound: int = 6) -> StreamPolicy:
    return StreamPolicy(keepalive_seconds=3600.0, max_pending_frames=bound, max_device_ids=10, snapshot=True)


POLICY = policy()


def taken(core: StreamCore, limit: int | None = None) -> list[dict]:
    """The frames the client gets (up to ``limit`` data frames), taking as a pump would."""
    frames: list[dict] = []
    for _ in range(100_000):
        texts = core.take(0.0)
        frames += [json.loads(text) for text in texts]
        if limit is not None and len([f for f in frames if f["event"] != "resumed"]) >= limit:
            return frames[: limit + (frames[0]["event"] == "resumed")]
        if not texts and core.wait_time(0.0) > 0:
            return frames
    raise AssertionError("the replay never ended")


def seqs(frames: list[dict]) -> list[int]:
    return [frame["data"]["data"]["SEQ"] for frame in frames if frame["event"] in ("message", "alert")]


def setup(partitions: int, window_records: int = 0):
    table = SubscriptionTable()
    window = RecentWindow(window_records, 10**9)
    live = Live(table, window, partitions)
    return table, window, live


async def test_records_routed_while_the_read_waited_follow_the_replay_none_twice():
    log = [Record(TOPIC, 0, o, 1000 + o, value("d0", o)) for o in range(12)]
    table, window, live = setup(partitions=1)
    for record in log[:8]:
        live.route(record)  # routed before the client came back
    history = FakeHistory(log)
    replayer = Replayer(topics=TOPICS, table=table, window=window, history=history, metrics=Metrics())
    core = StreamCore(frozenset({"d0"}), table=table, policy=POLICY, window=window)
    opening = asyncio.ensure_future(replayer.open(core, ResumeRequest(vector=((3,), (0,))), lambda: 0.0))
    await history.reading.wait()
    assert history.ranges[TopicPartition(TOPIC, 0)] == (3, 8), "up to where it had routed"
    for record in log[8:10]:
        live.route(record)  # while the read waits: to the replay's holder
    history.release.set()
    await opening
    live.route(log[10])  # after the open: to the stream, behind its replay
    frames = taken(core)
    assert frames[0] == {"event": "resumed", "data": {"recovered": True}}
    assert seqs(frames) == list(range(3, 11))
    assert len(table) == 1, "the holder is gone; the stream is subscribed"


# Properties: any cut of a log joins the live stream


@st.composite
def logs_and_cuts(draw):
    partitions = draw(st.integers(1, 3))
    length = draw(st.integers(0, 40))
    order = [draw(st.integers(0, partitions)) for _ in range(length)]  # partition `partitions`: alerts
    devices = [draw(st.sampled_from(["d0", "d1", "d2"])) for _ in range(length)]
    routed_before = draw(st.integers(0, length))
    routed_during = draw(st.integers(routed_before, length))
    cursor_at = draw(st.integers(0, routed_before))  # how much of the log the client had
    window_records = draw(st.sampled_from([0, 5, 100]))
    mine = draw(st.sampled_from([None, frozenset({"d0"}), frozenset({"d0", "d2"})]))
    bound = draw(st.sampled_from([6, 10_000]))  # STREAM_MAX_PENDING_FRAMES: a small one conflates
    return partitions, order, devices, routed_before, routed_during, cursor_at, window_records, mine, bound


def build_log(partitions: int, order: list[int], devices: list[str]) -> list[Record]:
    next_offset: dict[tuple[str, int], int] = {}
    log = []
    for seq, (which, device) in enumerate(zip(order, devices)):
        topic, partition = (ALERTS, 0) if which == partitions else (TOPIC, which)
        offset = next_offset.get((topic, partition), 0)
        next_offset[(topic, partition)] = offset + 1
        log.append(Record(topic, partition, offset, 1000 + seq, value(device, seq)))
    return log


def vector_after(log: list[Record], count: int, partitions: int) -> cursors.Vector:
    """The cursor of a client that had the first ``count`` records of ``log``."""
    offsets = [[0] * partitions, [0]]
    for record in log[:count]:
        offsets[TOPICS.index(record.topic)][record.partition] = record.offset + 1
    return tuple(tuple(o) for o in offsets)


async def resume(log, partitions, routed_before, routed_during, vector, window_records, mine, bound=6, cut_off=None):
    """A client resuming from ``vector``: the frames it gets, up to ``cut_off`` data frames. It
    reads a frame after each live record (it keeps up once its stream is open)."""
    table, window, live = setup(partitions, window_records)
    for record in log[:routed_before]:
        live.route(record)
    history = FakeHistory(log)
    replayer = Replayer(topics=TOPICS, table=table, window=window, history=history, metrics=Metrics())
    core = StreamCore(mine, table=table, policy=policy(bound), window=window)
    opening = asyncio.ensure_future(replayer.open(core, ResumeRequest(vector=vector), time.monotonic))
    reading = asyncio.ensure_future(history.reading.wait())
    done, _ = await asyncio.wait((opening, reading), return_when="FIRST_COMPLETED")
    reading.cancel()
    if opening not in done:  # from the log: more is routed while it reads
        for record in log[routed_before:routed_during]:
            live.route(record)
        history.release.set()
        await opening
        rest = log[routed_during:]
    else:  # from the window, at once
        rest = log[routed_before:]
    frames: list[dict] = []
    for record in rest:
        live.route(record)
        frames += [json.loads(text) for text in core.take(0.0)]
    frames += taken(core)
    if cut_off is not None:
        data = [f for f in frames if f["event"] != "resumed"]
        frames = frames[:1] + data[:cut_off]
    return frames


def expected(log: list[Record], after: int, mine) -> list[int]:
    return [
        seq
        for seq, r in enumerate(log)
        if seq >= after and (mine is None or json.loads(r.value)["data"]["DEVICE_ID"] in mine)
    ]


def assert_guarantee(log: list[Record], got: list[int], want: list[int], exact: bool) -> None:
    """Alerts exactly once, in order; positions once at most, and each device's newest among them;
    when ``exact`` (the bound is too high for anything to be conflated), all of them, each
    partition in log order. (A conflated position takes the place in line of the one it
    replaces: then it may come before another device's older one.)"""
    alerts = [seq for seq in want if log[seq].topic == ALERTS]
    assert [seq for seq in got if log[seq].topic == ALERTS] == alerts, "alerts: each once, in order"
    assert len(got) == len(set(got)), "nothing twice"
    assert set(got) <= set(want), "nothing before the cursor, nothing of other devices"
    if exact:
        assert sorted(got) == want, "no gap"
    newest = {json.loads(log[seq].value)["data"]["DEVICE_ID"]: seq for seq in want if log[seq].topic == TOPIC}
    assert set(newest.values()) <= set(got), "each device's newest position"
    if exact:
        for key in {(r.topic, r.partition) for r in log}:
            in_partition = [s for s in got if (log[s].topic, log[s].partition) == key]
            assert in_partition == sorted(in_partition), "each partition in log order"


@settings(max_examples=150, deadline=None)
@given(logs_and_cuts())
def test_any_cut_of_a_log_joins_the_live_stream_without_gap_or_repeat(case):
    partitions, order, devices, routed_before, routed_during, cursor_at, window_records, mine, bound = case
    log = build_log(partitions, order, devices)
    vector = vector_after(log, cursor_at, partitions)
    frames = asyncio.run(resume(log, partitions, routed_before, routed_during, vector, window_records, mine, bound))
    assert frames[0]["event"] == "resumed" and frames[0]["data"]["recovered"] is True, frames[:1]
    assert_guarantee(log, seqs(frames), expected(log, cursor_at, mine), exact=bound > len(log))


@settings(max_examples=100, deadline=None)
@given(logs_and_cuts(), st.integers(0, 40))
def test_a_client_cut_off_mid_replay_resumes_from_its_last_frame_exactly(case, cut_off):
    partitions, order, devices, _, _, cursor_at, window_records, mine, bound = case
    log = build_log(partitions, order, devices)
    vector = vector_after(log, cursor_at, partitions)
    # Everything is routed before both resumes: the first is cut off after `cut_off` frames.
    first = asyncio.run(resume(log, partitions, len(log), len(log), vector, window_records, mine, bound, cut_off))
    data = [f for f in first if f["event"] in ("message", "alert")]
    if data:
        _, vector = cursors.decode(data[-1]["id"])
    second = asyncio.run(resume(log, partitions, len(log), len(log), vector, window_records, mine, bound))
    assert_guarantee(log, seqs(data) + seqs(second), expected(log, cursor_at, mine), exact=True)


def test_an_empty_range_replays_nothing_and_goes_live():
    async def run():
        table, window, live = setup(partitions=1)
        history = FakeHistory([])
        replayer = Replayer(topics=TOPICS, table=table, window=window, history=history, metrics=Metrics())
        core = StreamCore(None, table=table, policy=POLICY, window=window)
        await replayer.open(core, ResumeRequest(vector=((0,), (0,))), lambda: 0.0)
        live.route(Record(TOPIC, 0, 0, 1, value("d0", 7)))
        return taken(core)

    frames = asyncio.run(run())
    assert seqs(frames) == [7]


def test_a_slice_of_a_replay_stops_at_its_time_as_well_as_at_its_counts():
    ticks = iter(range(10_000))
    feed = ReplayFeed((None for _ in range(5_000)), clock=lambda: next(ticks) / 1000)  # 1 ms a reading
    assert feed.pull(100, 4_096, max_seconds=0.003) == []
    assert not feed.finished
    assert feed.pull(100, 10_000) == [] and feed.finished, "no clock asked: only the counts bound it"


def test_a_shared_log_lets_go_of_what_every_replay_reading_it_has_passed():
    log = SharedLog([raw(Record(TOPIC, 0, o, o, value("d0", o))) for o in range(2_000)], MAX_BYTES)
    ahead, behind = LogSpan(log, 0, 2_000), LogSpan(log, 0, 2_000)
    fast = log_entries([(ahead, 0, 0, False)], None)
    assert len([step for _, step in zip(range(1_000), fast)]) == 1_000
    assert log.entry(10) is not None, "the other replay has not passed it yet"
    slow = log_entries([(behind, 0, 0, False)], None)
    assert [step.offset for _, step in zip(range(600), slow)] == list(range(600))
    assert log.entry(10) is None and log.entry(600) is not None, "both passed 512: let go"
    slow.close()  # the slow client left: what the other passed goes
    assert log.entry(600) is None and log.entry(999) is not None


def test_a_span_never_read_lets_go_of_its_records_when_its_replay_is_dropped():
    log = SharedLog([raw(Record(TOPIC, 0, o, o, value("d0", o))) for o in range(100)], MAX_BYTES)
    span = LogSpan(log, 10, 100)
    assert log.entry(50) is not None
    del span  # the client left before its replay began
    assert log.entry(50) is None
