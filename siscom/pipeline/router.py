"""The router actor: hands each frame to the sessions that want its device.

The index it reads is the :class:`~siscom.core.subscriptions.SubscriptionTable`, which sessions keep
up to date themselves; the router also records each device's newest position there, so that a
client connecting later starts from a snapshot instead of an empty map. Delivering never waits:
each session's outbox takes the frame or conflates it, so one slow client cannot hold up the
others.
"""

from __future__ import annotations

import time

from supervisors import Actor, Mailbox

from siscom.core.frames import Frame
from siscom.metrics import Metric, Metrics
from siscom.core.subscriptions import SubscriptionTable


class Router(Actor):
    def __init__(self, inbox: Mailbox[list[Frame]], table: SubscriptionTable, metrics: Metrics) -> None:
        super().__init__(name="router", inbox=inbox)
        self._table = table
        self._metrics = metrics

    async def receive(self, frames: list[Frame]) -> None:
        table = self._table
        subscribers_of = table.subscribers_of
        remember = table.remember
        for frame in frames:
            if not frame.alert:
                remember(frame.device_id, frame.text)
            named, everything = subscribers_of(frame.device_id)
            for subscriber in named:
                subscriber.deliver(frame)
            for subscriber in everything:
                subscriber.deliver(frame)
        # One latency sample per batch, from the newest record's Kafka timestamp to routing.
        self._metrics.timing(Metric.LATENCY, time.time() * 1000 - frames[-1].timestamp_ms)
