"""Where the consumer reads each partition from, so that a broker restart skips and repeats nothing.

(In this product a "position" is a GPS fix; a place in a Kafka log is an "offset".)

The consumer joins no group and assigns itself every partition of its topics. This module is its
memory of how far it got, :class:`ReadOffsets`: per partition, the offset after the last record
it handed on and a fingerprint of that record. The gateway owns it, so it outlives the consumer
actor. A :class:`Resumer` applies it each time the consumer places its partitions (on every
connection, and when the partitions of a topic change):

- A partition read before resumes right after the last record handed on. Its log may have been
  replaced meanwhile (a broker restarted without storage, a topic deleted and created again), and
  offsets alone cannot tell: a new log that has grown past our offset looks like the old one. So
  the consumer first re-reads that last record. If the log no longer reaches it, or holds a
  different record there, the whole log is newer than anything handed on, and the partition is
  read from its beginning. Otherwise the re-read record is dropped and reading goes on.
- A partition present when the consumer first looked starts where ``KAFKA_AUTO_OFFSET_RESET``
  says, as for any new consumer.
- A partition that appears later (topic created or recreated, partitions added) is read from its
  beginning: all of it was written after we started. (Kafka consumers reset new partitions per
  ``auto.offset.reset`` too; with ``latest`` that loses what was written to them before the
  consumer noticed them.)
- While reading, when a connection to the broker broke and was made again (the broker may have
  restarted, faster than the consumer's probe could notice), every partition read before is
  checked again as on resuming (:meth:`Resumer.recheck`). And a partition whose log ends before
  the offset reached was replaced: it too is read again from its beginning. The log end is taken
  from fetch responses, which the test broker reports correctly, rather than from ListOffsets,
  which it can report late.

Re-reading costs one record per partition per connection; trusting offsets loses records.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

logger = logging.getLogger(__name__)

__all__ = ["Mark", "ReadOffsets", "Resumer", "fingerprint"]

Batches = dict[TopicPartition, list[ConsumerRecord]]


def fingerprint(record: ConsumerRecord) -> int:
    """Tells one record from another at the same offset of a different log (same process only)."""
    return hash((record.timestamp, record.key, record.value))


class Mark(NamedTuple):
    """How far reading one partition got."""

    #: The offset of the next record to hand on.
    next_offset: int
    #: Fingerprint of the record at ``next_offset - 1``, when that one was handed on; None when
    #: only an offset was reached (no record read from this partition yet).
    last: int | None


class ReadOffsets:
    """Per partition, how far the consumer got; see the module docstring for how it is used."""

    def __init__(self) -> None:
        self._marks: dict[TopicPartition, Mark] = {}
        #: The partitions of the consumer's first look; None before it.
        self._first_look: frozenset[TopicPartition] | None = None

    def mark(self, partition: TopicPartition) -> Mark | None:
        return self._marks.get(partition)

    def start_offsets(self) -> list[tuple[TopicPartition, int]]:
        """Partitions none of whose records was handed on yet, with the offset reading starts at."""
        return [(partition, mark.next_offset) for partition, mark in self._marks.items() if mark.last is None]

    def handed_on(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        """Note the last record of each partition's batch: the decoder has it now."""
        for partition, records in batches.items():
            if records:
                last = records[-1]
                self._marks[partition] = Mark(last.offset + 1, fingerprint(last))

    def reached(self, partition: TopicPartition, offset: int) -> None:
        """Note the fetch offset of a partition none of whose records has been handed on yet."""
        if partition not in self._marks:
            self._marks[partition] = Mark(offset, None)

    def forget(self, partition: TopicPartition) -> None:
        self._marks.pop(partition, None)

    def looked(self, partitions: frozenset[TopicPartition]) -> None:
        """The consumer placed ``partitions``; the first time, they are its first look."""
        if self._first_look is None:
            self._first_look = partitions

    def is_new(self, partition: TopicPartition) -> bool:
        """True for a partition that appeared after the first look and was never read."""
        return self._first_look is not None and partition not in self._first_look and partition not in self._marks


class Resumer:
    """Places partitions on one connected consumer and checks the logs it resumes."""

    def __init__(self, consumer: AIOKafkaConsumer, offsets: ReadOffsets) -> None:
        self._consumer = consumer
        self._offsets = offsets
        #: Partitions resumed but not yet proven to be the logs we read before.
        self._unconfirmed: dict[TopicPartition, Mark] = {}
        self.assigned: frozenset[TopicPartition] = frozenset()

    async def place(self, partitions: Iterable[TopicPartition]) -> None:
        """Assign exactly ``partitions``, each read from where the module docstring says."""
        consumer, offsets = self._consumer, self._offsets
        wanted = frozenset(partitions)
        # Between assign() and the seeks below nothing awaits, so the fetcher never starts a
        # partition from an offset we did not choose.
        consumer.assign(sorted(wanted))
        self._unconfirmed.clear()
        from_start = []
        for partition in wanted:
            mark = offsets.mark(partition)
            if mark is not None:
                self._resume(partition, mark)
            elif offsets.is_new(partition):
                from_start.append(partition)
        offsets.looked(wanted)
        self.assigned = wanted
        if from_start:
            logger.info("Reading new partitions from their beginning: %s", _names(from_start))
            await consumer.seek_to_beginning(*from_start)

    def recheck(self) -> set[TopicPartition]:
        """Check again every partition read before, as on resuming; return them.

        For when the connection the records came through broke: the broker may have restarted
        without its data, faster than anyone noticed. Records fetched for these partitions and
        not yet admitted must be dropped: they are fetched again.
        """
        rechecked = set()
        for partition in self.assigned:
            mark = self._offsets.mark(partition)
            if mark is not None:
                self._resume(partition, mark)
                rechecked.add(partition)
        return rechecked

    def _resume(self, partition: TopicPartition, mark: Mark) -> None:
        # Re-read the last record handed on, if there was one, to recognise the log.
        self._consumer.seek(partition, mark.next_offset - 1 if mark.last is not None else mark.next_offset)
        self._unconfirmed[partition] = mark

    async def admit(self, batches: Batches) -> Batches:
        """What of a fetched batch may be handed on; restarts partitions whose log was replaced.

        Drops the re-read records that prove a resumed log, and everything of a replaced one.
        """
        consumer, offsets = self._consumer, self._offsets
        replaced: list[TopicPartition] = []
        for partition in list(batches):
            mark = self._unconfirmed.pop(partition, None)
            if mark is None or mark.last is None:
                continue  # records past a bare offset prove the log reaches it
            records = batches[partition]
            first = records[0]
            if first.offset == mark.next_offset - 1:
                if fingerprint(first) != mark.last:
                    del batches[partition]
                    replaced.append(partition)
                elif len(records) > 1:
                    batches[partition] = records[1:]
                else:
                    del batches[partition]
            # A first record past the one we asked for: the log start moved past it (retention)
            # or the broker skipped it (compaction). The log is not shorter than our offset, so
            # nothing proves it replaced: carry on with what came.
        for partition in self.assigned:
            mark = self._unconfirmed.get(partition) or offsets.mark(partition)
            end = consumer.highwater(partition)
            if mark is None or end is None:
                continue
            if end < mark.next_offset:
                batches.pop(partition, None)
                self._unconfirmed.pop(partition, None)
                if partition not in replaced:
                    replaced.append(partition)
            elif mark.last is None:
                self._unconfirmed.pop(partition, None)
        if replaced:
            await self._restart(replaced)
        return batches

    async def _restart(self, partitions: list[TopicPartition]) -> None:
        for partition in partitions:
            mark = self._offsets.mark(partition)
            logger.warning(
                "%s[%d]: the log no longer holds what was read up to offset %s (broker restarted "
                "without its data, or topic recreated); reading it again from its beginning",
                partition.topic,
                partition.partition,
                mark.next_offset if mark else "?",
            )
            self._offsets.forget(partition)
        await self._consumer.seek_to_beginning(*partitions)


def _names(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in sorted(partitions))
