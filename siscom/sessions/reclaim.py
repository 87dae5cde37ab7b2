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

The open streams are kept out of every other pass. Python runs a full pass by itself whenever
the objects promoted to the oldest generation since its last one reach a quarter of those it
holds, and with 10,000 open connections (about 230 tracked objects each) that pass stopped the
loop for 1.5 to 1.8 s (``python -m bench crowd``: keep-alives late, p99 of seconds). So, as the
start-up objects are (``gc.freeze``), what lives is frozen once the open streams have grown by a
quarter since the last freeze (after a pass over what came since, so that no garbage is frozen):
Python's own passes then walk only what is newer. The pass for ended streams unfreezes first,
since what those streams left was frozen with them, and freezes what survives.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass

from siscom.metrics import Metric, Metrics
from supervisors import Actor

__all__ = ["FrozenStreams", "Reclaimer", "due", "grown"]

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


def grown(open_streams: int, frozen_with: int) -> bool:
    """Whether the streams open now have grown enough, since ``frozen_with`` were open at the
    last freeze, to freeze them too (the same rule as :func:`due`)."""
    return open_streams - frozen_with >= max(MIN_ENDED, SHARE * frozen_with)


@dataclass
class FrozenStreams:
    """What the reclaimer has frozen, kept by the gateway so that a restart of the reclaimer does
    not forget it (frozen streams that end are freed only by a pass that thaws them)."""

    #: Streams open at the last freeze of streams; 0: no stream frozen.
    open_then: int = 0


class Reclaimer(Actor):
    """Runs a full collection when :func:`due` says so, and freezes the open streams when
    :func:`grown` says so, looking at the stream counters every ``INTERVAL`` seconds."""

    def __init__(self, metrics: Metrics, frozen: FrozenStreams) -> None:
        super().__init__(name="reclaimer")
        self._metrics = metrics
        self._frozen = frozen

    async def run(self) -> None:
        counters = self._metrics.counters
        collected_at = counters[Metric.CONNECTIONS_CLOSED]
        frozen = self._frozen
        while True:
            await asyncio.sleep(INTERVAL)
            closed = counters[Metric.CONNECTIONS_CLOSED]
            ended = closed - collected_at
            open_streams = self._metrics.open_streams
            if due(ended, open_streams):
                # Streams were frozen: what the ended ones left may be among them. Thawing
                # also thaws the start-up objects, so whatever survives is frozen again.
                thaw = frozen.open_then > 0
                if thaw:
                    gc.unfreeze()
                freeze = thaw or grown(open_streams, 0)
                self._collect(f"{ended} streams ended", freeze=freeze)
                collected_at = closed
                frozen.open_then = open_streams if freeze else 0
            elif grown(open_streams, frozen.open_then):
                self._collect(f"{open_streams} streams open", freeze=True)
                frozen.open_then = open_streams

    @staticmethod
    def _collect(why: str, *, freeze: bool) -> None:
        started = time.perf_counter()
        found = gc.collect()
        if freeze:
            gc.freeze()
        logger.debug(
            "Collected (%s): %d objects in %.1f ms; %d frozen",
            why,
            found,
            1000 * (time.perf_counter() - started),
            gc.get_freeze_count(),
        )
