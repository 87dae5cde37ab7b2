"""When the reclaimer runs a full collection (siscom.sessions.reclaim.due) and when it freezes the
open streams (siscom.sessions.reclaim.grown)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from siscom.metrics import Metric, Metrics
from siscom.sessions import reclaim
from siscom.sessions.reclaim import MIN_ENDED, SHARE, FrozenStreams, Reclaimer, due, grown


def test_a_few_ended_streams_wait_for_more_before_a_full_pass():
    assert not due(MIN_ENDED - 1, 0)
    assert due(MIN_ENDED, 0)


def test_with_many_streams_open_a_pass_waits_for_a_share_of_them_to_have_ended():
    open_streams = 10_000
    needed = int(SHARE * open_streams)
    assert needed > MIN_ENDED
    assert not due(needed - 1, open_streams)
    assert due(needed, open_streams)


def test_open_streams_are_frozen_again_once_they_grow_by_a_share_of_those_frozen():
    assert not grown(MIN_ENDED - 1, 0)
    assert grown(MIN_ENDED, 0)
    frozen_with = 10_000
    assert not grown(frozen_with + int(SHARE * frozen_with) - 1, frozen_with)
    assert grown(frozen_with + int(SHARE * frozen_with), frozen_with)
    assert not grown(frozen_with - 500, frozen_with)  # fewer open: nothing new to freeze


@pytest.fixture
def thawed_after():
    """The reclaimer freezes this whole process: thaw it again for the tests after."""
    yield
    gc.unfreeze()


async def test_the_reclaimer_freezes_a_grown_crowd_and_thaws_it_once_streams_end(monkeypatch, thawed_after):
    monkeypatch.setattr(reclaim, "INTERVAL", 0.01)
    metrics, frozen = Metrics(), FrozenStreams()
    reclaimer = asyncio.create_task(Reclaimer(metrics, frozen).run())
    try:
        metrics.incr(Metric.CONNECTIONS_OPENED, 1000)
        await until(lambda: frozen.open_then == 1000)
        assert gc.get_freeze_count() > 0
        left_behind = Cycle()  # what an ended stream leaves: a cycle, frozen with the crowd
        witness = weakref.ref(left_behind)
        gc.collect()
        gc.freeze()
        del left_behind
        gc.collect()
        assert witness() is not None  # frozen: out of every pass that does not thaw
        metrics.incr(Metric.CONNECTIONS_CLOSED, 1000)
        await until(lambda: frozen.open_then == 0)
        assert witness() is None, "a pass that did not thaw left the ended streams' cycles frozen"
    finally:
        reclaimer.cancel()
        await asyncio.gather(reclaimer, return_exceptions=True)


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
