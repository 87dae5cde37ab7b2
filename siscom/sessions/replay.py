"""Opening a resumed stream: the ``resumed`` frame, what the client missed, then live.

A cursor says, per partition, the offset of the next record the client has not had. What it
missed is every record of its devices from there up to where this process has routed (the
dispatch cursor); the live stream goes on from there. Both are joined in one event-loop step
(nothing is routed in between), so nothing is lost and nothing comes twice:

- from the recent-records window when it still holds everything from the cursor on: no Kafka;
- else from the log (:class:`~siscom.pipeline.history.HistoryReader`, whose reads are shared
  between concurrent replays); live records routed meanwhile wait in a holder, subscribed in the
  same step as the read's end was fixed, and follow the replay;
- a cursor ahead of this process (another replica read further; or the log was replaced under
  it) waits, briefly, for this process to catch up; past that it is not honoured.

Replayed frames are built for the one client (their cursor is where that client's stream
stands, record by record); live frames stay shared. They are built only as the client takes them
(a :class:`~siscom.core.replayfeed.ReplayFeed`, a bounded slice per take), from records decoded
once for every replay that shares the read; what is routed meanwhile waits in the client's stream
under the slow-client rules, and follows the replay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator

from aiokafka import TopicPartition

from siscom.core import cursors
from siscom.core.deliveries import Delivery
from siscom.core.protocol import resumed_frame
from siscom.core.replayfeed import ReplayFeed, cursored, framed, log_entries, positions_at, recursored
from siscom.core.resume import ResumeRequest, Source, Verdict, judge
from siscom.core.stream import StreamCore
from siscom.core.subscriptions import SubscriptionLimit, SubscriptionTable
from siscom.core.window import RecentWindow
from siscom.metrics import Metric, Metrics
from siscom.pipeline.history import HistoryReader, HistoryUnavailable

logger = logging.getLogger(__name__)

#: How long a cursor ahead of this process waits for it to catch up.
CATCH_UP_SECONDS = 2.0
_POLL_SECONDS = 0.02


def _earlier(offset: int | None, reached: int) -> int:
    return reached if offset is None else min(offset, reached)


class _Holder:
    """Keeps live deliveries while a replay is read from Kafka (a subscriber like a core)."""

    __slots__ = ("deliveries",)

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    def deliver(self, delivery: Delivery, now: float) -> None:
        self.deliveries.append(delivery)


class Replayer:
    def __init__(
        self,
        *,
        topics: tuple[str, ...],
        table: SubscriptionTable,
        window: RecentWindow,
        history: HistoryReader,
        metrics: Metrics,
    ) -> None:
        self._topics = topics
        self._table = table
        self._window = window
        self._history = history
        self._metrics = metrics

    async def open(self, core: StreamCore, request: ResumeRequest, clock: Callable[[], float]) -> None:
        """Open ``core``'s stream as ``request`` asks (in place of ``core.open``)."""
        try:
            await self._open(core, request, clock)
        except HistoryUnavailable as error:
            logger.warning("Cannot replay from the log: %s", error)
            self._lost(core, clock, "the log cannot be read now")

    async def since_vector(self, since_ms: int) -> cursors.Vector | None:
        """Where a replay ``since`` starts (None before this process has read the log); for the
        budget, which needs it before the replay runs (siscom/sessions/recovery.py)."""
        return await self._since(since_ms)

    async def _open(self, core: StreamCore, request: ResumeRequest, clock: Callable[[], float]) -> None:
        vector = request.vector
        if request.since_ms is not None:
            vector = await self._since(request.since_ms)
            if vector is None:
                self._lost(core, clock, "this replica has not read the log yet")
                return
        assert vector is not None
        verdict = self._judge(vector)
        logger.debug("Resuming a stream (%s)", verdict.source.value)  # routine: counted in resumes_*
        deadline = clock() + CATCH_UP_SECONDS
        while verdict.source is Source.AHEAD and clock() < deadline and core.closing is None:
            await asyncio.sleep(_POLL_SECONDS)
            verdict = self._judge(vector)
        if verdict.source is Source.AHEAD:
            verdict = Verdict(Source.LOST, await self._why_ahead(vector))
        if verdict.source is Source.LOST:
            self._lost(core, clock, verdict.reason or "cannot be honoured")
            return
        if verdict.source is Source.WINDOW:
            # No await from the verdict to the open: nothing is routed in between.
            steps = self._window.steps_after(vector, core.initial_device_ids)
            self._recovered(core, clock, vector, cursored(steps, positions_at(self._topics, vector), recursored))
            return
        await self._from_kafka(core, vector, clock)

    def _judge(self, vector: cursors.Vector) -> Verdict:
        dispatched = self._dispatched()
        return judge(vector, dispatched, dispatched is not None and self._window.covers(vector))

    def _dispatched(self) -> cursors.Vector | None:
        cursor = self._window.dispatched
        return None if cursor is None else cursors.decode(cursor)[1]

    async def _since(self, since_ms: int) -> cursors.Vector | None:
        dispatched = self._dispatched()
        if dispatched is None:
            return None
        partitions = [
            TopicPartition(topic, partition)
            for topic, offsets in zip(self._topics, dispatched)
            for partition in range(len(offsets))
        ]
        found = await self._history.offsets_for_time(partitions, since_ms)
        # Nothing at or after that time, or only later than this process has routed: the rest
        # comes live (the dispatch cursor is then where the replay starts and ends).
        return tuple(
            tuple(_earlier(found[TopicPartition(topic, p)], reached) for p, reached in enumerate(offsets))
            for topic, offsets in zip(self._topics, dispatched)
        )

    async def _why_ahead(self, vector: cursors.Vector) -> str:
        partitions = [
            TopicPartition(topic, partition)
            for topic, offsets in zip(self._topics, vector)
            for partition in range(len(offsets))
        ]
        try:
            _, ends = await self._history.log_bounds(partitions)
        except HistoryUnavailable:
            return "this replica has not caught up with the cursor"
        for topic, offsets in zip(self._topics, vector):
            for partition, offset in enumerate(offsets):
                if offset > ends.get(TopicPartition(topic, partition), offset):
                    return "the log was replaced (the cursor is past its end)"
        return "this replica has not caught up with the cursor"

    async def _from_kafka(self, core: StreamCore, vector: cursors.Vector, clock: Callable[[], float]) -> None:
        ids = core.initial_device_ids
        holder = _Holder()
        try:
            self._table.subscribe(holder, ids)
        except SubscriptionLimit:
            core.refuse_subscription()  # as the plain path answers it: an error frame, 1013
            return
        try:
            dispatched = self._dispatched()
            assert dispatched is not None
            ranges = {
                TopicPartition(topic, partition): (offsets[partition] if partition < len(offsets) else 0, end)
                for topic, offsets, routed in zip(self._topics, vector, dispatched)
                for partition, end in enumerate(routed)
            }
            starts, _ = await self._history.log_bounds(list(ranges))
            for tp, (start, end) in ranges.items():
                if start < starts.get(tp, 0) and start < end:
                    self._lost(core, clock, "the cursor is older than the log holds")
                    return
            spans = await self._history.read(ranges)
        finally:
            self._table.unsubscribe(holder)
        index = {topic: number for number, topic in enumerate(self._topics)}
        records = log_entries(
            ((span, index[tp.topic], tp.partition, index[tp.topic] == 1) for tp, span in spans.items()), ids
        )
        # From the unsubscribe above to the open below, nothing awaits: the holder's deliveries
        # are exactly what was routed since the read's end was fixed, and follow the log's.
        self._recovered(
            core, clock, vector, cursored(records, positions_at(self._topics, vector), framed), live=holder.deliveries
        )

    def _recovered(
        self,
        core: StreamCore,
        clock: Callable[[], float],
        vector: cursors.Vector,
        replay: Iterator[Delivery | None],
        live: list[Delivery] | None = None,
    ) -> None:
        """Open ``core`` recovered: ``replay`` (this client's deliveries, with its cursors, None
        for each record passed over), then ``live`` (routed while the log was read), whose shared
        cursors are past the replay's."""
        cursor = cursors.encode(cursors.topics_crc(self._topics), vector)
        core.open(
            clock(),
            resumed=resumed_frame(True),
            replay=ReplayFeed(self._counted(replay), time.perf_counter),
            cursor=cursor,
            live=live or (),
        )
        self._metrics.incr(Metric.RESUMES_RECOVERED)

    def _counted(self, replay: Iterator[Delivery | None]) -> Iterator[Delivery | None]:
        """``replay``, counting what the client was given of it once it ends (or is given up)."""
        replayed = 0
        try:
            for step in replay:
                if step is not None:
                    replayed += 1
                yield step
        finally:
            if replayed:
                self._metrics.incr(Metric.REPLAYED_RECORDS, replayed)

    def _lost(self, core: StreamCore, clock: Callable[[], float], reason: str) -> None:
        core.open(clock(), resumed=resumed_frame(False, reason))
        self._metrics.incr(Metric.RESUMES_NOT_RECOVERED)
