"""How the gateway makes each pipeline actor: the seams through which a test swaps one.

The actor classes themselves fit these signatures and are the gateway's defaults. A child spec
holds a factory, never an actor, so every restart builds a fresh actor from the same inputs (as
an OTP child spec holds a start function and its arguments). The chaos suite passes subclasses
that crash on purpose instead of patching the classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aiokafka import ConsumerRecord

from supervisors import Actor, Mailbox

from siscom.config import Settings
from siscom.core.cursors import LogPositions
from siscom.core.deliveries import Delivery, Progress
from siscom.core.window import RecentWindow
from siscom.core.subscriptions import SubscriptionTable
from siscom.metrics import Metrics
from siscom.pipeline.consumer import KafkaStatus
from siscom.pipeline.offsets import ReadOffsets

__all__ = ["ConsumerFactory", "DecoderFactory", "RouterFactory"]


class ConsumerFactory(Protocol):
    """Makes the actor that reads Kafka into ``out`` (see :class:`~siscom.pipeline.consumer.Consumer`)."""

    def __call__(
        self,
        settings: Settings,
        out: Mailbox[Sequence[ConsumerRecord]],
        status: KafkaStatus,
        metrics: Metrics,
        offsets: ReadOffsets,
    ) -> Actor: ...


class DecoderFactory(Protocol):
    """Makes the actor that turns records into deliveries (see :class:`~siscom.pipeline.decoder.Decoder`)."""

    def __call__(
        self,
        inbox: Mailbox[Sequence[ConsumerRecord]],
        out: Mailbox[list[Delivery] | Progress],
        *,
        alerts_topic: str | None,
        max_record_bytes: int,
        metrics: Metrics,
        positions: LogPositions | None = None,
        offsets: ReadOffsets | None = None,
    ) -> Actor: ...


class RouterFactory(Protocol):
    """Makes the actor that hands deliveries to sessions (see :class:`~siscom.pipeline.router.Router`)."""

    def __call__(
        self,
        inbox: Mailbox[list[Delivery] | Progress],
        table: SubscriptionTable,
        metrics: Metrics,
        window: RecentWindow | None = None,
    ) -> Actor: ...
