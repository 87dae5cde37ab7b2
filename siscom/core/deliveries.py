"""What travels from the decoder to the router and on to sessions: one :class:`Delivery` per record.

(A *delivery* is a decoded record on its way to clients; a *frame* is what a client receives on
its connection. A delivery carries its frame's text.) The text is built once by the decoder and
the same ``str`` object is handed to every recipient, so fan-out costs one reference per client,
never a copy or a re-encode.
"""

from __future__ import annotations

from typing import NamedTuple

from siscom.core.geo import Position
from siscom.core.protocol import alert_frame, message_frame
from siscom.core.records import Decoded


class Delivery(NamedTuple):
    """A decoded record, routed by device id; ``text`` is the frame every recipient gets."""

    device_id: str
    text: str
    #: Alerts are never conflated; positions (``message`` frames) are, for clients that fall behind.
    alert: bool
    #: Kafka record timestamp (ms since the epoch), for end-to-end latency.
    timestamp_ms: int
    #: Where the record says its device is (positions only; see :mod:`siscom.core.geo`).
    position: Position | None = None
    #: Where the record is in the log: the topic's index among the gateway's topics, the
    #: partition and the offset (for replays; -1 when unknown).
    topic_index: int = -1
    partition: int = -1
    offset: int = -1


class Progress(NamedTuple):
    """The dispatch cursor moved with no record to route: reading starts on partitions that had
    none yet (so an idle client's pings name where they start), or only malformed records came.

    It travels the decoder-to-router mailbox like a batch, so the router takes it in order."""

    cursor: str


def record_delivery(
    value: Decoded,
    *,
    alert: bool,
    cursor: str | None,
    timestamp_ms: int,
    topic_index: int,
    partition: int,
    offset: int,
) -> Delivery:
    """A decoded record's delivery, its frame built with ``cursor``: the one record-to-frame step,
    for the live stream (the dispatch cursor, shared by every recipient) and for a replay (the
    replaying client's own cursor)."""
    if alert:
        return Delivery(
            value.device_id,
            alert_frame(value.text, cursor),
            True,
            timestamp_ms,
            topic_index=topic_index,
            partition=partition,
            offset=offset,
        )
    return Delivery(
        value.device_id,
        message_frame(value.text, cursor),
        False,
        timestamp_ms,
        value.position,
        topic_index=topic_index,
        partition=partition,
        offset=offset,
    )
