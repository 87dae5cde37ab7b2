"""Deciding overload from event-loop lag, and whom to shed."""

from __future__ import annotations

import json
from dataclasses import dataclass

from siscom.core.deliveries import Delivery
from siscom.core.geo import BBox
from siscom.core.mapoptions import MapOptions
from siscom.core.mapstream import MapStreamCore
from siscom.core.overload import LagWindow, pick_victims
from siscom.core.protocol import message_frame
from siscom.core.stream import StreamCore, StreamPolicy
from siscom.core.subscriptions import SubscriptionTable


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
    cost: float = 0.0
    closed: bool = False

    def close(self, code: int, reason: str) -> None:
        self.closed = True


def test_among_equal_costs_the_largest_backlogs_go_first_and_clients_with_nothing_waiting_never() -> None:
    sessions = [Waiting(n) for n in range(10)] + [Waiting(0) for _ in range(90)]
    victims = pick_victims(sessions, 0.25)
    assert [v.backlog for v in victims] == [9, 8, 7]  # a quarter of the 9 with a backlog, rounded up
    assert pick_victims([Waiting(0)], 0.25) == []
    assert len(pick_victims([Waiting(5)], 0.25)) == 1


def test_the_clients_that_cost_most_go_first_not_the_well_behaved_ones_whose_backlog_grew() -> None:
    """Under a late loop every reader falls behind: a dashboard of one vehicle with 40 frames
    waiting costs little; the clients the loop works hardest for go, however little waits."""
    canaries = [Waiting(backlog=40, cost=2.0) for _ in range(6)]
    costly = [Waiting(backlog=3, cost=5_000.0 + n) for n in range(2)]
    victims = pick_victims(canaries + costly, 0.25)
    assert victims == [costly[1], costly[0]]


def test_a_core_costs_the_frames_taken_for_it_and_the_devices_its_pans_looked_at_per_second() -> None:
    table = SubscriptionTable()
    for n in range(50):  # the router's part: every device's position, 0.001 degrees apart
        table.remember(
            Delivery(f"d{n}", message_frame(f'{{"data":{{"DEVICE_ID":"d{n}"}}}}'), False, 0, (0.5, 0.001 * n))
        )
    policy = StreamPolicy(keepalive_seconds=60.0, max_pending_frames=1000, max_device_ids=10, snapshot=True)
    quiet = StreamCore(frozenset({"d0"}), table=table, policy=policy)
    panner = MapStreamCore(None, table=table, policy=policy, options=MapOptions(bbox=BBox(0, 0, 0.02, 1)))
    for core in (quiet, panner):
        core.open(10.0)
        core.take(10.0)
    for step in range(1, 10):
        west = 0.002 * step
        panner.receive(json.dumps({"action": "subscribe", "bbox": [west, 0, west + 0.02, 1]}), 10.0)
        panner.take(10.0)
    assert quiet.cost(12.0) == 0.5  # one frame (its snapshot) in two seconds
    assert panner.cost(12.0) > 10 * quiet.cost(12.0)
    assert panner.cost(10.5) == 2 * panner.cost(12.0), "the first second counts whole"
