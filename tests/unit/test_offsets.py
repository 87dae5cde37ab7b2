"""Where the consumer reads each partition from: resume, recognise a replaced log, never skip."""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition

from siscom.pipeline.offsets import Mark, ReadOffsets, Resumer, fingerprint

P0, P1, P2 = (TopicPartition("t", n) for n in range(3))


def record(partition: TopicPartition, offset: int, value: bytes = b"v", timestamp: int = 1000) -> ConsumerRecord:
    return ConsumerRecord(
        partition.topic, partition.partition, offset, timestamp, 0, None, value, None, -1, len(value), ()
    )


class FakeConsumer:
    """The few AIOKafkaConsumer calls a Resumer makes; the test sets highwaters."""

    def __init__(self) -> None:
        self.assigned: list[TopicPartition] = []
        self.seeks: dict[TopicPartition, int] = {}
        self.from_beginning: list[TopicPartition] = []
        self.highwaters: dict[TopicPartition, int] = {}

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)
        self.seeks.clear()

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks[partition] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.from_beginning.extend(partitions)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.highwaters.get(partition)


async def resumed(offsets: ReadOffsets, partitions=(P0,)) -> tuple[Resumer, FakeConsumer]:
    consumer = FakeConsumer()
    resumer = Resumer(consumer, offsets)
    await resumer.place(frozenset(partitions))
    return resumer, consumer


def read_up_to(offsets: ReadOffsets, partition: TopicPartition, last: ConsumerRecord) -> None:
    offsets.handed_on({partition: [record(partition, last.offset - 1), last]})


async def test_partitions_of_the_first_look_start_where_the_reset_policy_says():
    offsets = ReadOffsets()
    resumer, consumer = await resumed(offsets, (P0, P1))
    assert sorted(consumer.assigned) == [P0, P1]
    assert consumer.seeks == {} and consumer.from_beginning == []  # aiokafka applies the policy
    assert resumer.assigned == {P0, P1}


async def test_a_partition_that_appears_later_is_read_from_its_beginning():
    offsets = ReadOffsets()
    resumer, consumer = await resumed(offsets, (P0,))
    await resumer.place(frozenset({P0, P1}))
    assert consumer.from_beginning == [P1]


async def test_a_resumed_log_that_still_holds_the_last_record_goes_on_right_after_it():
    offsets = ReadOffsets()
    last = record(P0, 41, b"last")
    read_up_to(offsets, P0, last)
    assert offsets.mark(P0) == Mark(42, fingerprint(last))
    resumer, consumer = await resumed(offsets)
    assert consumer.seeks == {P0: 41}  # re-read the last record handed on
    consumer.highwaters[P0] = 50
    batches = await resumer.admit({P0: [record(P0, 41, b"last"), record(P0, 42, b"new")]})
    assert [r.offset for r in batches[P0]] == [42]
    assert consumer.from_beginning == []


async def test_a_resumed_log_holding_another_record_there_is_read_from_its_beginning():
    offsets = ReadOffsets()
    read_up_to(offsets, P0, record(P0, 41, b"last"))
    resumer, consumer = await resumed(offsets)
    consumer.highwaters[P0] = 60  # the new log grew past our offset: offsets alone cannot tell
    batches = await resumer.admit({P0: [record(P0, 41, b"someone else"), record(P0, 42)]})
    assert batches == {}
    assert consumer.from_beginning == [P0]
    assert offsets.mark(P0) is None


async def test_a_resumed_log_that_ends_before_the_last_record_is_read_from_its_beginning():
    offsets = ReadOffsets()
    read_up_to(offsets, P0, record(P0, 41))
    resumer, consumer = await resumed(offsets)
    consumer.highwaters[P0] = 9
    assert await resumer.admit({}) == {}
    assert consumer.from_beginning == [P0]


async def test_a_log_shortened_under_a_live_connection_is_read_again_from_its_beginning():
    offsets = ReadOffsets()
    resumer, consumer = await resumed(offsets, (P0, P1))
    consumer.highwaters.update({P0: 20, P1: 5})
    batches = await resumer.admit({P0: [record(P0, 18), record(P0, 19)], P1: [record(P1, 4)]})
    offsets.handed_on(batches)
    assert consumer.from_beginning == []
    consumer.highwaters[P0] = 3  # the broker restarted empty between two fetches
    assert await resumer.admit({}) == {}
    assert consumer.from_beginning == [P0]


async def test_an_offset_reached_without_records_is_resumed_and_checked_against_the_log_end():
    offsets = ReadOffsets()
    offsets.reached(P0, 100)
    resumer, consumer = await resumed(offsets)
    assert consumer.seeks == {P0: 100}
    consumer.highwaters[P0] = 100
    await resumer.admit({})
    assert consumer.from_beginning == []
    consumer.highwaters[P0] = 99
    await resumer.admit({})
    assert consumer.from_beginning == [P0]


async def test_records_past_the_one_asked_for_are_taken_as_they_come():
    offsets = ReadOffsets()
    read_up_to(offsets, P0, record(P0, 41))
    resumer, consumer = await resumed(offsets)
    consumer.highwaters[P0] = 60
    batches = await resumer.admit({P0: [record(P0, 45), record(P0, 46)]})  # compacted away, say
    assert [r.offset for r in batches[P0]] == [45, 46]
    assert consumer.from_beginning == []


def test_an_offset_reached_never_overrides_the_last_record_handed_on():
    offsets = ReadOffsets()
    read_up_to(offsets, P0, record(P0, 7))
    offsets.reached(P0, 3)
    assert offsets.mark(P0).next_offset == 8


async def test_a_restarted_consumer_resumes_every_partition_it_had():
    offsets = ReadOffsets()
    await resumed(offsets, (P0, P1))
    read_up_to(offsets, P0, record(P0, 10))
    offsets.reached(P1, 4)
    _, consumer = await resumed(offsets, (P0, P1, P2))
    assert consumer.seeks == {P0: 10, P1: 4}
    assert consumer.from_beginning == [P2]
