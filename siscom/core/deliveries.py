"""What travels from the decoder to the router and on to sessions: one :class:`Delivery` per record.

(A *delivery* is a decoded record on its way to clients; a *frame* is what a client receives on
its connection. A delivery carries its frame's text.) The text is built once by the decoder and the same ``str`` object is handed to every
recipient, so fan-out costs one reference per client, never a copy or a re-encode.
"""

from __future__ import annotations

from typing import NamedTuple

from siscom.core.geo import Position


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
