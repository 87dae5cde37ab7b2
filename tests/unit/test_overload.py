"""Deciding overload from event-loop lag, and whom to shed."""

from __future__ import annotations

from dataclasses import dataclass

from siscom.core.overload import LagWindow, pick_victims


def feed(window: LagWindow, lags: list[float], start: float = 0.0, step: float = 0.1) -> list[bool]:
    now, verdicts = start, []
    for lag in lags:
        now += step + lag
        verdicts.append(window.observe(now, lag))
    return verdicts


def test_a_loop_late_on_average_for_the_whole_window_is_overloaded() -> None:
    window = LagWindow(threshold=0.1, sustain=5.0)
    verdicts = feed(window, [0.3] * 20)
    assert not verdicts[0] and verdicts[-1]


def test_one_long_pause_among_normal_samples_is_not_overload() -> None:
    """A collector pass of 1.5 s at 10,000 connections, in a window of otherwise idle looks."""
    window = LagWindow(threshold=0.1, sustain=5.0)
    assert not any(feed(window, [0.001] * 30 + [1.5] + [0.001] * 30))


def test_after_a_restart_a_shorter_span_of_fresh_samples_decides() -> None:
    window = LagWindow(threshold=0.1, sustain=5.0)
    feed(window, [0.3] * 20)
    window.restart()
    assert not window.observe(100.0, 0.3, span=1.0)
    assert window.observe(100.9, 0.3, span=1.0)


@dataclass(eq=False)
class Waiting:
    backlog: int
    closed: bool = False

    def close(self, code: int, reason: str) -> None:
        self.closed = True


def test_the_largest_backlogs_go_first_and_clients_with_nothing_waiting_never() -> None:
    sessions = [Waiting(n) for n in range(10)] + [Waiting(0) for _ in range(90)]
    victims = pick_victims(sessions, 0.25)
    assert [v.backlog for v in victims] == [9, 8, 7]  # a quarter of the 9 with a backlog, rounded up
    assert pick_victims([Waiting(0)], 0.25) == []
    assert len(pick_victims([Waiting(5)], 0.25)) == 1
