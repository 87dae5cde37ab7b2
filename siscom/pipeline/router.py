"""The router actor: hands each frame to the sessions that want its device.

The index it reads is the :class:`~siscom.core.subscriptions.SubscriptionTable`, which sessions keep
up to date themselves; the router also records each device's newest position there, so that a
client connecting later starts from a snapshot instead of an empty map. Delivering never waits:
each session's outbox takes the frame or conflates it, so one slow client cannot hold up the
others. Clients that watch a box are not in the device index; the
:class:`~siscom.core.viewport.ViewportIndex` reaches them, and costs nothing while nobody watches.
"""

from __future__ import annotations

import time

from siscom.core.deliveries import Delivery, Progress
from siscom.core.subscriptions import SubscriptionTable
from siscom.core.window import RecentWindow
from siscom.metrics import Metric, Metrics
from supervisors import Actor, Mailbox


class Router(Actor):
    def __init__(
        self,
        inbox: Mailbox[list[Delivery] | Progress],
        table: SubscriptionTable,
        metrics: Metrics,
        window: RecentWindow | None = None,
    ) -> None:
        """``window`` (owned by the gateway) keeps what was routed, for clients that resume."""
        super().__init__(name="router", inbox=inbox)
        self._table = table
        self._window = window
        self._next_gauges = 0.0
        self._metrics = metrics

    async def receive(self, deliveries: list[Delivery] | Progress) -> None:
        if isinstance(deliveries, Progress):
            if self._window is not None:
                self._window.progressed(deliveries.cursor)
            return
        table = self._table
        subscribers_of = table.subscribers_of
        remember = table.remember
        # One time for the batch, routed in one step (the clock the sessions' loop reads).
        now = time.monotonic()
        for delivery in deliveries:
            if not delivery.alert:
                remember(delivery)
            named, everything = subscribers_of(delivery.device_id)
            for subscriber in named:
                subscriber.deliver(delivery, now)
            for subscriber in everything:
                subscriber.deliver(delivery, now)
        # Clients that watch a box are reached through the viewport index, once per batch.
        viewports = table.viewports
        if viewports.active:
            viewports.route(deliveries, now)
        window = self._window
        if window is not None:
            # In the same step as the deliveries: a resume never sees a record twice or misses one.
            window.extend(deliveries)
            window.routed(deliveries[-1])
            if now >= self._next_gauges:
                self._next_gauges = now + 1.0
                self._metrics.gauge(Metric.WINDOW_RECORDS, len(window))
                oldest = window.oldest_timestamp_ms()
                self._metrics.gauge(Metric.WINDOW_AGE_SECONDS, 0.0 if oldest is None else time.time() - oldest / 1000)
        # One latency sample per batch, from the newest record's Kafka timestamp to routing.
        self._metrics.timing(Metric.LATENCY, time.time() * 1000 - deliveries[-1].timestamp_ms)
