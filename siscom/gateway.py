"""The supervision tree of one gateway process, with an explicit start and stop.

::

    root (one_for_one)
    ├── pipeline (rest_for_one): consumer -> decoder -> router
    ├── sessions (one_for_one, temporary children): one session per WebSocket client
    ├── shedder: overload shedding (unless turned off)
    └── reclaimer: a full garbage collection once enough streams have ended

The mailboxes between pipeline actors and the subscription table belong to the gateway, not to
any actor incarnation: when the supervisor restarts the decoder or the router, the new actor
picks up the same inbox and the same subscribers, so connected clients notice nothing.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from aiokafka import ConsumerRecord

from siscom.config import Settings
from siscom.core.cursors import LogPositions
from siscom.core.deliveries import Delivery, Progress
from siscom.core.mapoptions import MapOptions
from siscom.core.mapstream import MapStreamCore
from siscom.core.protocol import CloseCode
from siscom.core.resume import ResumeRequest
from siscom.core.stream import StreamCore
from siscom.core.subscriptions import SubscriptionTable
from siscom.core.warming import Phase, WarmProgress
from siscom.core.window import RecentWindow
from siscom.guard import Guard
from siscom.metrics import Metrics
from siscom.pipeline.consumer import Consumer, KafkaStatus
from siscom.pipeline.decoder import Decoder
from siscom.pipeline.history import HistoryReader
from siscom.pipeline.offsets import ReadOffsets
from siscom.pipeline.router import Router
from siscom.pipeline.warmup import WarmUp
from siscom.security.inbound import InboundLimits
from siscom.security.tokens import Grant
from siscom.sessions.flusher import Flusher
from siscom.sessions.reclaim import FrozenStreams, Reclaimer
from siscom.sessions.recovery import BudgetedReplayer, ReplayTurns
from siscom.sessions.replay import Replayer
from siscom.sessions.session import Session, SessionLimits
from siscom.sessions.shedding import LoadShedder
from siscom.sessions.transport import Transport
from supervisors import ChildSpec, Mailbox, Restart, Strategy, Supervisor

logger = logging.getLogger(__name__)

#: Longest a stream waits to open for the consumer to reach the broker (or fail to) at start.
START_GRACE = 5.0
#: Batches waiting between two pipeline actors before the upstream one waits (backpressure).
PIPELINE_MAILBOX_SIZE = 64


class Gateway:
    """Owns the actor tree and the state that must outlive actor restarts."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        consumer: type[Consumer] = Consumer,
        decoder: type[Decoder] = Decoder,
        router: type[Router] = Router,
    ) -> None:
        """``consumer``, ``decoder`` and ``router``: the classes of the pipeline's actors, made anew
        on every (re)start (a child spec holds a factory, never an actor, as an OTP child spec holds
        a start function). The chaos suite passes subclasses that fail on purpose."""
        self.settings = settings
        self.metrics = metrics or Metrics.from_settings(
            settings.statsd_host, settings.statsd_port, settings.statsd_prefix
        )
        self.kafka = KafkaStatus()
        #: How far reading got per partition: a restarted consumer resumes there.
        self.read_offsets = ReadOffsets()
        #: Origin, connection-limit and token checks for the routes.
        self.guard = Guard(settings)
        self.subscriptions = SubscriptionTable(max_ids=settings.stream_max_subscribed_ids)
        #: The dispatch vector the decoder advances; every frame's cursor is made from it.
        self.positions = LogPositions(settings.topics)
        #: The last records routed, for resumes that need no Kafka.
        self.window = RecentWindow(settings.stream_replay_window_records, settings.stream_replay_window_bytes)
        #: Reads the log's past for older resumes and ``since`` (its own Kafka consumer, on first use).
        self.history = HistoryReader(settings, self.metrics)
        #: Where the warm-up stands (the snapshot and window read back from the log at start).
        self.warming = WarmProgress(
            settings.stream_snapshot_lookback_seconds > 0 or settings.kafka_snapshot_topic is not None
        )
        self.warming.on_warm.append(self._warmed)
        self._warmup = WarmUp(
            settings,
            self.metrics,
            self.warming,
            table=self.subscriptions,
            window=self.window,
            positions=self.positions,
            offsets=self.read_offsets,
        )
        self.replayer = Replayer(
            topics=settings.topics,
            table=self.subscriptions,
            window=self.window,
            history=self.history,
            metrics=self.metrics,
        )
        #: Turns of the replays running at once; and every resume goes through the budget first.
        self.replay_turns = ReplayTurns(
            settings.stream_replay_concurrency, settings.stream_replay_wait_seconds, self.metrics
        )
        self.recovery = BudgetedReplayer(
            self.replayer,
            window=self.window,
            turns=self.replay_turns,
            max_records=settings.stream_replay_max_records,
            metrics=self.metrics,
        )
        self.limits = SessionLimits(
            keepalive_seconds=settings.stream_keepalive_seconds,
            send_timeout_seconds=settings.stream_send_timeout_seconds,
            max_pending_frames=settings.stream_max_pending_frames,
            max_device_ids=settings.stream_max_device_ids,
            snapshot=settings.stream_snapshot,
            close_timeout_seconds=min(2.0, settings.stream_close_linger_seconds),
            close_linger_seconds=settings.stream_close_linger_seconds,
            token_notice_seconds=settings.stream_token_notice_seconds,
        )
        #: Writes, once per event-loop turn (or write delay), the frames routed to every session.
        self.flusher = Flusher(self.metrics, delay=settings.stream_write_delay_milliseconds / 1000)
        #: What the reclaimer froze (siscom/sessions/reclaim.py), kept across its restarts.
        self._frozen_streams = FrozenStreams()
        self._actor_factories = (consumer, decoder, router)
        self._session_numbers = itertools.count(1)
        #: Closing every client (1001) when the server stops; set by the first :meth:`drain`.
        self._drain: asyncio.Task[None] | None = None
        #: Waits for the server's own signal that it is stopping, then drains (see drain_when).
        self._drain_trigger: asyncio.Task[None] | None = None
        self._stopping_signal: asyncio.Future[Callable[[], Awaitable[None]]] | None = None
        self._records: Mailbox[Sequence[ConsumerRecord]] = Mailbox(PIPELINE_MAILBOX_SIZE)
        self._deliveries: Mailbox[list[Delivery] | Progress] = Mailbox(PIPELINE_MAILBOX_SIZE)
        self._sessions: Supervisor | None = None
        self._pipeline: Supervisor | None = None
        self._root = Supervisor(
            "root",
            [
                # Supervisors get all the time they need to stop their own children (as in OTP).
                ChildSpec("pipeline", self._new_pipeline, shutdown=math.inf),
                ChildSpec("sessions", self._new_session_supervisor, shutdown=math.inf),
                *self._shedder_spec(),
                # Frees what ended streams leave in reference cycles (siscom/sessions/reclaim.py).
                ChildSpec("reclaimer", partial(Reclaimer, self.metrics, self._frozen_streams)),
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
        consumer, decoder, router = self._actor_factories
        # Each spec holds a factory and its arguments (as data: functools.partial), never an actor.
        self._pipeline = Supervisor(
            "pipeline",
            [
                ChildSpec(
                    "consumer",
                    partial(
                        consumer, settings, self._records, self.kafka, metrics, self.read_offsets, warmup=self._warmup
                    ),
                ),
                ChildSpec(
                    "decoder",
                    partial(
                        decoder,
                        self._records,
                        self._deliveries,
                        alerts_topic=settings.kafka_alerts_topic,
                        max_record_bytes=settings.stream_max_record_bytes,
                        metrics=metrics,
                        positions=self.positions,
                        offsets=self.read_offsets,
                    ),
                ),
                ChildSpec("router", partial(router, self._deliveries, self.subscriptions, metrics, self.window)),
            ],
            strategy=Strategy.REST_FOR_ONE,
            intensity=5,
            period=10.0,
        )
        return self._pipeline

    def _shedder_spec(self) -> list[ChildSpec]:
        """Overload shedding (:mod:`siscom.sessions.shedding`), unless turned off."""
        settings = self.settings
        if settings.stream_shed_lag_seconds <= 0:
            return []
        shedder = partial(
            LoadShedder,
            self.sessions,
            self.metrics,
            lag_threshold=settings.stream_shed_lag_seconds,
            sustain=settings.stream_shed_after_seconds,
        )
        return [ChildSpec("shedder", shedder)]

    def _new_session_supervisor(self) -> Supervisor:
        self._sessions = Supervisor("sessions", strategy=Strategy.ONE_FOR_ONE, intensity=1000, period=1.0)
        return self._sessions

    # Lifecycle

    async def start(self) -> None:
        self.guard.log_posture(logger)
        await self._root.start()
        self._watcher = asyncio.create_task(self._watch(), name="gateway.watch")
        self._stopping_signal = asyncio.get_running_loop().create_future()
        self._drain_trigger = asyncio.create_task(self._drain_on_signal(), name="gateway.drain-trigger")

    async def drain(self) -> None:
        """The server is stopping: refuse new streams, close every client with 1001 and wait
        (bounded) for them to finish. Only the first call does it; later ones wait for it."""
        if self._drain is None:
            logger.info("Shutting down: closing streams")
            self._drain = asyncio.ensure_future(self.close_sessions(CloseCode.GOING_AWAY, "server shutting down"))
        await asyncio.shield(self._drain)

    def drain_when(self, stopping: Callable[[], Awaitable[None]]) -> None:
        """Drain as soon as ``stopping()`` returns: the server's signal that it stops taking
        connections and waits for the open ones. Only the first signal given is watched."""
        signal = self._stopping_signal
        if signal is not None and not signal.done():
            signal.set_result(stopping)

    async def _drain_on_signal(self) -> None:
        assert self._stopping_signal is not None
        stopping = await self._stopping_signal
        await stopping()
        await self.drain()

    @property
    def draining(self) -> bool:
        return self._drain is not None

    async def stop(self) -> None:
        """Drain (if the server has not already), then stop the tree (children in reverse order)."""
        await self.drain()
        if self._drain_trigger is not None:
            self._drain_trigger.cancel()
            await asyncio.wait((self._drain_trigger,))
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait((self._watcher,))
        await self._root.stop()
        await self.history.stop()

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
        if self.kafka.connected and self.warming.phase is Phase.WARMING:
            return "warming"
        if not self.kafka.ready:
            return self.kafka.reason()
        if not self.warming.done:
            return "warming"
        return None

    def _warmed(self) -> None:
        """The warm-up is done: streams that opened before it (the broker was away) get the
        snapshot now. They have had no record yet: the live stream starts after the warm-up."""
        for session in self.sessions():
            session.warmed()

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
        grant: Grant | None = None,
        options: MapOptions | None = None,
        resume: ResumeRequest | None = None,
    ) -> Session:
        """Start a session; ``grant`` is what the client's token allows (None: tokens are off);
        ``options`` its map options (box, rate, fields), if any; ``resume``: where its stream
        resumes from (a cursor or ``since``)."""
        if self._sessions is None or not self._sessions.running or self.draining:
            raise RuntimeError("the session supervisor is not accepting sessions")
        inbound = InboundLimits(self.guard.inbound, asyncio.get_running_loop().time())
        verifier = self.guard.verifier
        verify = None if verifier is None else verifier.verify
        # Plain streams keep the plain core: the router's path to them costs what it did.
        kind: type[StreamCore] | functools.partial[MapStreamCore] = (
            functools.partial(MapStreamCore, options=options) if options is not None and options.any else StreamCore
        )
        core = kind(
            device_ids,
            table=self.subscriptions,
            policy=self.limits.policy,
            grant=grant,
            inbound=inbound,
            verify=verify,
            window=self.window,
        )
        session = Session(
            transport,
            core,
            name=f"session-{next(self._session_numbers)}",
            limits=self.limits,
            metrics=self.metrics,
            resume=None if resume is None else (self.recovery, resume),
            flusher=self.flusher,
            gate=self._open_gate,
        )
        # Never suspends (start_child does not): a disconnect cancelling the route cannot land
        # between the session's start and the route's code that ends it.
        await self._sessions.start_child(ChildSpec(session.name, lambda: session, restart=Restart.TEMPORARY))
        return session

    async def _open_gate(self) -> None:
        """What a stream waits for before it opens: the warm-up, unless the broker is away."""
        await self.warming.wait_open(START_GRACE)

    def sessions(self) -> list[Session]:
        """The sessions running now (each has ``backlog``, ``cost`` and ``close(code, reason)``)."""
        if self._sessions is None:
            return []
        return [child.actor for child in self._sessions.which_children() if isinstance(child.actor, Session)]

    async def close_sessions(self, code: CloseCode, reason: str, timeout: float = 5.0) -> None:
        """Ask every session to close with ``code``; wait up to ``timeout`` for them to finish."""
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
            # Held from admission until the stream's close frame is out, a little past the end of
            # its session (which `connections` counts): the limit refuses by this count.
            "connection_slots": self.guard.limiter.total,
            "devices_subscribed": self.subscriptions.devices_indexed,
            "devices_known": self.subscriptions.devices_known,
            "kafka": {
                "connected": kafka.connected,
                "assigned_partitions": len(kafka.assigned),
                "total_partitions": kafka.total_partitions,
            },
            "restarts": self._root.restarts,
            "warmup": self.warming.as_dict(),
            "window": self.window_stats(),
            "history_reads_by_partition": {
                f"{tp.topic}[{tp.partition}]": n for tp, n in sorted(self.history.reads.items())
            },
        }

    def window_stats(self) -> dict[str, float]:
        """Size and age of the recent-records window (also published as gauges by the router)."""
        oldest = self.window.oldest_timestamp_ms()
        return {
            "records": len(self.window),
            "bytes": self.window.bytes,
            "age_seconds": 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000),
        }
