"""The supervision tree of one gateway process, with an explicit start and stop.

::

    root (one_for_one)
    ├── pipeline (rest_for_one): consumer -> decoder -> router
    └── sessions (one_for_one, temporary children): one session per WebSocket client

The mailboxes between pipeline actors and the subscription table belong to the gateway, not to
any actor incarnation: when the supervisor restarts the decoder or the router, the new actor
picks up the same inbox and the same subscribers, so connected clients notice nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence

from aiokafka import ConsumerRecord

from supervisors import ChildSpec, Mailbox, Restart, Strategy, Supervisor

from siscom.pipeline.consumer import Consumer, KafkaStatus
from siscom.pipeline.offsets import ReadPositions
from siscom.pipeline.decoder import Decoder
from siscom.pipeline.router import Router
from siscom.sessions.session import Session, SessionLimits
from siscom.sessions.shedding import LoadShedder
from siscom.config import Settings
from siscom.core.deliveries import Delivery
from siscom.metrics import Metrics
from siscom.core.protocol import CloseCode
from siscom.security.guard import Guard
from siscom.security.inbound import InboundLimits
from siscom.core.subscriptions import SubscriptionTable
from siscom.web.transport import Transport

logger = logging.getLogger(__name__)

#: Batches waiting between two pipeline actors before the upstream one waits (backpressure).
PIPELINE_MAILBOX_SIZE = 64


class Gateway:
    """Owns the actor tree and the state that must outlive actor restarts."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics.from_settings(
            settings.statsd_host, settings.statsd_port, settings.statsd_prefix
        )
        self.kafka = KafkaStatus()
        #: How far reading got per partition: a restarted consumer resumes there.
        self.read_positions = ReadPositions()
        #: Origin, connection-limit and token checks for the routes.
        self.guard = Guard(settings)
        self.subscriptions = SubscriptionTable(max_ids=settings.stream_max_subscribed_ids)
        self.limits = SessionLimits(
            keepalive_seconds=settings.stream_keepalive_seconds,
            send_timeout_seconds=settings.stream_send_timeout_seconds,
            max_pending_frames=settings.stream_max_pending_frames,
            max_device_ids=settings.stream_max_device_ids,
            snapshot=settings.stream_snapshot,
        )
        self._records: Mailbox[Sequence[ConsumerRecord]] = Mailbox(PIPELINE_MAILBOX_SIZE)
        self._deliveries: Mailbox[list[Delivery]] = Mailbox(PIPELINE_MAILBOX_SIZE)
        self._sessions: Supervisor | None = None
        self._pipeline: Supervisor | None = None
        self._root = Supervisor(
            "root",
            [
                # Supervisors get all the time they need to stop their own children (as in OTP).
                ChildSpec("pipeline", self._new_pipeline, shutdown=math.inf),
                ChildSpec("sessions", self._new_session_supervisor, shutdown=math.inf),
                *self._shedder_spec(),
            ],
            strategy=Strategy.ONE_FOR_ONE,
            intensity=3,
            period=30.0,
        )
        self._watcher: asyncio.Task[None] | None = None
        #: Set if the tree gave up (restart intensity exceeded at the root).
        self.failed = asyncio.Event()

    # The tree

    def _new_pipeline(self) -> Supervisor:
        settings, metrics = self.settings, self.metrics
        self._pipeline = Supervisor(
            "pipeline",
            [
                ChildSpec(
                    "consumer",
                    lambda: Consumer(settings, self._records, self.kafka, metrics, self.read_positions),
                ),
                ChildSpec(
                    "decoder",
                    lambda: Decoder(
                        self._records,
                        self._deliveries,
                        alerts_topic=settings.kafka_alerts_topic,
                        max_record_bytes=settings.stream_max_record_bytes,
                        metrics=metrics,
                    ),
                ),
                ChildSpec("router", lambda: Router(self._deliveries, self.subscriptions, metrics)),
            ],
            strategy=Strategy.REST_FOR_ONE,
            intensity=5,
            period=10.0,
        )
        return self._pipeline

    def _shedder_spec(self) -> list[ChildSpec]:
        settings = self.settings
        if settings.stream_shed_lag_seconds <= 0:
            return []
        return [
            ChildSpec(
                "shedder",
                lambda: LoadShedder(
                    self.sessions,
                    self.metrics,
                    lag_threshold=settings.stream_shed_lag_seconds,
                    sustain=settings.stream_shed_after_seconds,
                ),
            )
        ]

    def sessions(self) -> list[Session]:
        """The sessions running now."""
        if self._sessions is None:
            return []
        return [child.actor for child in self._sessions.which_children() if isinstance(child.actor, Session)]

    def _new_session_supervisor(self) -> Supervisor:
        self._sessions = Supervisor("sessions", strategy=Strategy.ONE_FOR_ONE, intensity=1000, period=1.0)
        return self._sessions

    # Lifecycle

    async def start(self) -> None:
        self.guard.log_posture(logger)
        await self._root.start()
        self._watcher = asyncio.create_task(self._watch(), name="gateway.watch")

    async def stop(self) -> None:
        """Close every client with 1001, then stop the tree (children in reverse order)."""
        await self.close_sessions(CloseCode.GOING_AWAY, "server shutting down")
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait((self._watcher,))
        await self._root.stop()

    async def _watch(self) -> None:
        try:
            await self._root.wait()
        except Exception:
            logger.critical("The supervision tree gave up; the process must exit", exc_info=True)
            self.failed.set()

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why records cannot reach clients now (for ``/ready``), or None when they can."""
        if self.failed.is_set():
            return "supervision tree failed"
        if not self._root.running:
            return "not running"
        pipeline = self._pipeline
        if pipeline is None or not pipeline.running or not all(c.running for c in pipeline.which_children()):
            return "pipeline restarting"
        if not self.kafka.ready:
            return self.kafka.reason()
        return None

    @property
    def root(self) -> Supervisor:
        """The root supervisor, for inspection: its children, their restarts."""
        return self._root

    # Sessions

    async def open_session(
        self,
        transport: Transport,
        device_ids: frozenset[str] | None,
        *,
        allowed_devices: frozenset[str] | None = None,
        expires_at: float | None = None,
        inbound: InboundLimits | None = None,
    ) -> Session:
        """Start a session; ``allowed_devices`` and ``expires_at`` come from the client's token."""
        if self._sessions is None or not self._sessions.running:
            raise RuntimeError("the session supervisor is not running")
        session = Session(
            transport, device_ids, table=self.subscriptions, limits=self.limits, metrics=self.metrics,
            allowed_devices=allowed_devices, expires_at=expires_at, inbound=inbound,
        )
        await self._sessions.start_child(ChildSpec(session.name, lambda: session, restart=Restart.TEMPORARY))
        return session

    async def end_session(self, session: Session) -> None:
        """The client left: stop its session (a no-op if it already ended)."""
        session.client_left()
        if self._sessions is not None and not session.finished.is_set():
            await self._sessions.terminate_child(session.name)

    async def close_sessions(self, code: CloseCode, reason: str, timeout: float = 5.0) -> None:
        """Ask every session to close with ``code``; wait up to ``timeout`` for them to finish."""
        if self._sessions is None:
            return
        sessions = self.sessions()
        for session in sessions:
            session.close(code, reason)
        if sessions:
            await asyncio.wait([asyncio.ensure_future(s.finished.wait()) for s in sessions], timeout=timeout)

    @property
    def connections(self) -> int:
        return self.metrics.open_streams

    def stats(self) -> dict[str, object]:
        kafka = self.kafka
        return {
            **self.metrics.snapshot(),
            "connections": self.connections,
            "devices_subscribed": self.subscriptions.devices_indexed,
            "devices_known": self.subscriptions.devices_known,
            "kafka": {
                "connected": kafka.connected,
                "assigned_partitions": len(kafka.assigned),
                "total_partitions": kafka.total_partitions,
            },
            "restarts": self._root.restarts,
        }
