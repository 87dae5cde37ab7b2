"""Where a process stands in its warm-up, for ``/ready``, the stats, and streams waiting to open.

A process reads back part of the log before it calls itself ready (see
:mod:`siscom.pipeline.warmup`). Streams that open meanwhile wait at :meth:`WarmProgress.wait_open`
and then start from the full snapshot. But a process whose broker is down at start serves as it
always did: it says so (:meth:`WarmProgress.broker_unreachable`), the gate opens, and the warm-up
comes when the broker does.

Owned by the gateway; the consumer actor moves it on, the routes and the sessions only read it.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable


class Phase(enum.Enum):
    OFF = "off"  # no lookback: the process is ready as soon as the broker is
    STARTING = "starting"  # not yet connected: streams wait, unless the broker turns out absent
    UNREACHABLE = "unreachable"  # no broker yet: streams open cold, warm-up comes with the broker
    WARMING = "warming"
    WARM = "warm"


class WarmProgress:
    def __init__(self, enabled: bool) -> None:
        self.phase = Phase.STARTING if enabled else Phase.OFF
        self.records = 0
        self.partitions_done = 0
        self.partitions_total = 0
        #: How long the warm-up took, once done (the last attempt, if the broker was lost meanwhile).
        self.seconds: float | None = None
        self._started = 0.0
        self._changed = asyncio.Event()
        #: Called once the warm-up is done, before any stream waiting at the gate opens.
        self.on_warm: list[Callable[[], None]] = []

    @property
    def gate_closed(self) -> bool:
        """True while a stream that opens now would miss the snapshot being read."""
        return self.phase in (Phase.STARTING, Phase.WARMING)

    @property
    def done(self) -> bool:
        return self.phase in (Phase.WARM, Phase.OFF)

    async def wait_open(self, start_grace: float) -> None:
        """Return once a stream may open (at once when it may now).

        Before the consumer has either connected or failed to, wait at most ``start_grace``
        seconds: a consumer that never gets that far (a broker that hangs, a crash) must not
        hold streams back; they open cold, and get the snapshot when the warm-up ends.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + start_grace
        while self.gate_closed:
            self._changed.clear()
            starting = self.phase is Phase.STARTING
            try:
                async with asyncio.timeout_at(deadline if starting else None):
                    await self._changed.wait()
            except TimeoutError:
                if self.phase is Phase.STARTING:
                    return

    def broker_unreachable(self) -> None:
        if not self.done:
            self._move(Phase.UNREACHABLE)

    def begin(self, partitions: int) -> None:
        """Warm-up starts (again, after a lost broker: the counts start over)."""
        self.records = self.partitions_done = 0
        self.partitions_total = partitions
        self._started = time.monotonic()
        self._move(Phase.WARMING)

    def read(self, records: int, partitions_done: int) -> None:
        self.records += records
        self.partitions_done = partitions_done

    def finish(self) -> None:
        self.seconds = time.monotonic() - self._started
        self.partitions_done = self.partitions_total
        self.phase = Phase.WARM
        for callback in self.on_warm:
            callback()
        self._changed.set()

    def _move(self, phase: Phase) -> None:
        self.phase = phase
        self._changed.set()

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.phase.value,
            "records_read": self.records,
            "partitions_done": self.partitions_done,
            "partitions_total": self.partitions_total,
            "seconds": round(
                self.seconds
                if self.seconds is not None
                else (time.monotonic() - self._started if self._started else 0.0),
                3,
            ),
        }
