"""The write round: the sessions that had frames queued in one event-loop turn are written in one
callback in the next, and their frames counted once."""

from __future__ import annotations

import asyncio

from siscom.metrics import Metrics
from siscom.sessions.flusher import Flusher


async def test_flushes_scheduled_in_one_turn_run_together_in_the_next_in_one_loop_callback():
    metrics = Metrics()
    flusher = Flusher(metrics)
    ran: list[tuple[str, float]] = []
    flusher.schedule(lambda now: ran.append(("a", now)) or 2)
    # Another callback queued between the sessions' flushes: with a callback per flush it would
    # run between them; the round runs them all in its one callback.
    asyncio.get_running_loop().call_soon(lambda: ran.append(("other", 0.0)))
    for name in ("b", "c"):
        flusher.schedule(lambda now, name=name: ran.append((name, now)) or 2)
    assert ran == []  # not in the turn that queued the frames
    await asyncio.sleep(0)
    assert [name for name, _ in ran] == ["a", "b", "c", "other"]
    assert len({now for name, now in ran if name != "other"}) == 1  # one clock reading for the round
    assert metrics.counters["frames_sent"] == 6  # counted once, for the round


async def test_a_failing_flush_is_logged_and_the_others_in_its_round_still_run(caplog):
    flusher = Flusher(Metrics())
    ran: list[str] = []

    def broken(now: float) -> int:
        raise RuntimeError("a bug in one session")

    flusher.schedule(broken)
    flusher.schedule(lambda now: ran.append("after") or 1)
    await asyncio.sleep(0)
    assert ran == ["after"]
    assert "A session's flush failed" in caplog.text


async def test_a_flush_scheduled_during_a_round_runs_in_the_next_one():
    flusher = Flusher(Metrics())
    ran: list[str] = []

    def first(now: float) -> int:
        ran.append("first")
        flusher.schedule(lambda now: ran.append("second") or 0)
        return 0

    flusher.schedule(first)
    await asyncio.sleep(0)
    assert ran == ["first"]
    await asyncio.sleep(0)
    assert ran == ["first", "second"]


async def test_with_a_write_delay_flushes_scheduled_within_it_run_together_when_it_ends():
    loop = asyncio.get_running_loop()
    flusher = Flusher(Metrics(), delay=0.05)
    ran: list[tuple[str, float]] = []
    start = loop.time()
    flusher.schedule(lambda now: ran.append(("a", now)) or 1)
    await asyncio.sleep(0.01)
    assert ran == []  # a turn, and more, went by: still waiting
    flusher.schedule(lambda now: ran.append(("b", now)) or 1)
    await asyncio.sleep(0.08)
    assert [name for name, _ in ran] == ["a", "b"]
    assert ran[0][1] - start >= 0.05  # written when the delay counted from the first had passed
    assert ran[0][1] == ran[1][1]  # in one round


async def test_a_keepalive_flush_is_not_delayed():
    flusher = Flusher(Metrics(), delay=10.0)
    ran: list[str] = []
    flusher.flush_now(lambda now: ran.append("keep-alive") or 1)
    assert ran == ["keep-alive"]
