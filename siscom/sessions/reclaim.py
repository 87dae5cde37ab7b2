"""Give back the memory of streams that ended: a full pass of the garbage collector, paced by
the streams that ended since the last one.

Why it is needed: what a connection leaves when it ends (its session, stream core and outbox,
Hypercorn's protocol objects, h11's or wsproto's state and buffers, asyncio's transport) is held
in reference cycles, so only the cyclic collector frees it, and the serving process keeps that
collector's passes rare (``siscom.cli.settle_collector``): a young pass every 20,000 allocations,
and no full pass at all for minutes, since the start-up objects it froze still count towards
the number Python waits for before one. Under churn (50 clients a second, each staying a second
or two) the ended connections then piled up: about 13 MB freed at once every 30 s (each time
pausing the loop 0.2 to 1.2 s to walk and free a thousand connections), and whatever had been
promoted to the oldest generation never freed, so the RSS rose for as long as the churn lasted.

The rule: once the streams that ended since the last full pass reach a quarter of those open
(and at least ``MIN_ENDED``), collect. A full pass walks what is alive and what waits to be
freed, so its cost stays proportional to the ended streams it frees (as Python's own rule for
the oldest generation intends), each pass is short, and the memory of ended streams waiting for
it is at most about a quarter of what the open ones hold (or ``MIN_ENDED`` connections' worth).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from siscom.metrics import Metric, Metrics
from supervisors import Actor

__all__ = ["Reclaimer", "due"]

logger = logging.getLogger(__name__)

#: Seconds between two looks at the counters.
INTERVAL = 1.0
#: Ended streams that always justify a pass (a few MB of connections at most).
MIN_ENDED = 200
#: Ended streams, as a share of the open ones, that justify a pass.
SHARE = 0.25


def due(ended: int, open_streams: int) -> bool:
    """Whether ``ended`` streams ended since the last full pass justify one, ``open_streams``
    being open."""
    return ended >= max(MIN_ENDED, SHARE * open_streams)


class Reclaimer(Actor):
    """Runs a full collection when :func:`due` says so, looking at the stream counters every
    ``INTERVAL`` seconds."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(name="reclaimer")
        self._metrics = metrics

    async def run(self) -> None:
        counters = self._metrics.counters
        collected_at = counters[Metric.CONNECTIONS_CLOSED]
        while True:
            await asyncio.sleep(INTERVAL)
            closed = counters[Metric.CONNECTIONS_CLOSED]
            ended = closed - collected_at
            if due(ended, self._metrics.open_streams):
                started = time.perf_counter()
                found = gc.collect()
                collected_at = closed
                logger.debug(
                    "Collected after %d streams ended: %d objects in %.1f ms",
                    ended,
                    found,
                    1000 * (time.perf_counter() - started),
                )
