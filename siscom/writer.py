"""``siscom snapshot-writer``: the process that keeps the last-positions topic.

::

    snapshot-writer (rest_for_one)
    ├── consumer   the gateway's consumer actor, reading KAFKA_TOPIC (warm-up first)
    └── writer     newest position per device -> KAFKA_SNAPSHOT_TOPIC

It starts with the same lookback warm-up as a gateway, so that a writer started after the fleet
parked still records every vehicle that reported within the lookback; then it reads live. One
writer per cluster is enough; two are harmless (compaction keeps each device's newest).
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from aiokafka import TopicPartition

from siscom.config import Settings
from siscom.core.cursors import LogPositions
from siscom.core.records import device_id_of
from siscom.core.subscriptions import SubscriptionTable
from siscom.core.warming import WarmProgress
from siscom.core.warmset import WarmSet
from siscom.core.window import RecentWindow
from siscom.metrics import Metrics
from siscom.pipeline.consumer import Consumer, KafkaStatus
from siscom.pipeline.offsets import ReadOffsets
from siscom.pipeline.snapshot_writer import WRITE_TIMEOUT, LatestPositions, SnapshotWriter
from siscom.pipeline.warmup import WarmUp
from supervisors import ChildSpec, Mailbox, Strategy, Supervisor

logger = logging.getLogger(__name__)


class WriterWarmUp(WarmUp):
    """The gateway's warm-up, keeping each device's newest record for the writer instead of
    filling a snapshot and a window."""

    def __init__(self, settings: Settings, metrics: Metrics, latest: LatestPositions, offsets: ReadOffsets) -> None:
        super().__init__(
            # No window: only each device's newest record is kept.
            settings.replace(stream_replay_window_records=0),
            metrics,
            WarmProgress(True),
            table=SubscriptionTable(),
            window=RecentWindow(0, 0),
            positions=LogPositions(settings.topics),
            offsets=offsets,
            snapshot_topic=False,
        )
        self._latest = latest

    async def _apply(self, warm: WarmSet, ends: dict[TopicPartition, int]) -> None:
        max_bytes = self._settings.stream_max_record_bytes
        for timestamp, _, _, _, value in warm.newest.values():
            device_id = device_id_of(value, max_bytes=max_bytes)  # the hint found it; prove it
            if device_id is not None:
                self._latest.offer(device_id, timestamp, value)
        warm.newest = {}
        for tp, end in ends.items():
            self._offsets.reached(tp, end)


async def run_snapshot_writer(settings: Settings, stop: asyncio.Event) -> int:
    """Run until ``stop`` is set (then write what waits, and return 0) or the tree gives up (1)."""
    # The writer reads positions only.
    settings = settings.replace(kafka_alerts_topic=None)
    metrics = Metrics.from_settings(settings.statsd_host, settings.statsd_port, settings.statsd_prefix)
    latest = LatestPositions()
    offsets = ReadOffsets()
    records: Mailbox = Mailbox(64)
    warmup = WriterWarmUp(settings, metrics, latest, offsets)
    tree = Supervisor(
        "snapshot-writer",
        [
            ChildSpec("consumer", partial(Consumer, settings, records, KafkaStatus(), metrics, offsets, warmup=warmup)),
            ChildSpec("writer", partial(SnapshotWriter, settings, records, latest), shutdown=WRITE_TIMEOUT + 5),
        ],
        strategy=Strategy.REST_FOR_ONE,
        intensity=5,
        period=10.0,
    )
    logger.info(
        "Snapshot writer: %s -> %s, each device at most once per %g s",
        settings.kafka_topic,
        settings.kafka_snapshot_topic,
        settings.stream_snapshot_write_seconds,
    )
    await tree.start()
    failed = asyncio.ensure_future(tree.wait())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((failed, stopping), return_when=asyncio.FIRST_COMPLETED)
    if failed.done():
        stopping.cancel()
        logger.critical("The supervision tree gave up: %r", failed.exception())
        return 1
    failed.cancel()
    logger.info("Stopping: writing the positions that wait (%d)", len(latest.pending))
    await tree.stop()
    logger.info("Snapshot writer stopped")
    return 0
