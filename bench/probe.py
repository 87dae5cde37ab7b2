"""The latency floor under every server: how old records are when a bare Kafka consumer gets them.

A second consumer of the run's topic, in the harness, with the servers' fetch settings
(``fetch_max_wait_ms=10``). Each record's age on arrival (now minus the producer's stamp, found
by a byte search as the clients do) is the part of an end-to-end latency that the producer, the
broker and a fetch take before any server sees the record: no server's p99 can be below this
one's. It shares the harness's event loop with the producer, so its figure includes what the
harness itself adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array

from aiokafka import AIOKafkaConsumer

_STAMP = b'"producer_ts_ms":'


class BrokerProbe:
    """Reads ``topic`` from its end and keeps (stamp, age) per record, in ms."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest", fetch_max_wait_ms=10
        )
        self.stamps = array("d")
        self.ages = array("f")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def window(self, t0_ms: float, t1_ms: float) -> list[float]:
        """Ages of the records stamped in ``[t0_ms, t1_ms)``; forgets everything before ``t1_ms``."""
        ages = [age for stamp, age in zip(self.stamps, self.ages) if t0_ms <= stamp < t1_ms]
        self.stamps, self.ages = array("d"), array("f")
        return ages

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=1000)
            now_ms = time.time() * 1000.0
            for records in batches.values():
                for record in records:
                    value = record.value
                    start = value.find(_STAMP)
                    if start < 0:
                        continue
                    start += len(_STAMP)
                    stamp = int(value[start : value.find(b",", start)])
                    self.stamps.append(stamp)
                    self.ages.append(now_ms - stamp)
