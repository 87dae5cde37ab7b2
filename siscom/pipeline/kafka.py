"""Everything this project asks of aiokafka beyond its documented API, in one place.

The consumer actor talks to the broker only through these functions and the public methods of
:class:`aiokafka.AIOKafkaConsumer` (``start``, ``getmany``, ``assign``, ``seek``,
``seek_to_beginning``, ``position``, ``highwater``). Two private attributes of aiokafka are used
here and nowhere else: ``AIOKafkaConsumer._client`` with its ``fetch_all_metadata()`` and its
``_conns`` table. ``tests/contracts/test_dependency_contracts.py`` fails, naming aiokafka and its
version, when either is missing or changed.

aiokafka also logs every failed connection attempt, at ERROR, every few seconds while a broker is
away; the consumer already reports each attempt in one line of its own. Once a consumer is made,
aiokafka's repeats are held back (:func:`quiet_aiokafka_repeats`), except TLS failures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl

from aiokafka import AIOKafkaConsumer
from aiokafka.cluster import ClusterMetadata
from aiokafka.helpers import create_ssl_context

from siscom.config import Settings
from siscom.logs import RepeatLimiter

__all__ = [
    "broker_connections",
    "client_options",
    "consumer_options",
    "fetch_metadata",
    "is_tls_failure",
    "new_consumer",
    "quiet_aiokafka_repeats",
    "stop_consumer",
]

#: New partitions and recreated topics show up in aiokafka's own metadata within this long.
METADATA_MAX_AGE_MS = 5000
#: The same aiokafka log line is written at most once per this many seconds.
AIOKAFKA_REPEAT_INTERVAL = 60.0


def consumer_options(settings: Settings) -> dict[str, object]:
    """Keyword arguments for :class:`aiokafka.AIOKafkaConsumer` from the settings."""
    options: dict[str, object] = {
        "bootstrap_servers": list(settings.kafka_bootstrap_servers),
        "client_id": f"{settings.kafka_group_id}-{socket.gethostname()}-{os.getpid()}",
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.kafka_auto_offset_reset,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "fetch_min_bytes": settings.kafka_fetch_min_bytes,
        "fetch_max_bytes": settings.kafka_fetch_max_bytes,
        "max_partition_fetch_bytes": settings.kafka_max_partition_fetch_bytes,
        "metadata_max_age_ms": METADATA_MAX_AGE_MS,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_username
        options["sasl_plain_password"] = settings.kafka_password
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    return options


def client_options(settings: Settings) -> dict[str, object]:
    """The options every Kafka client of ours shares (brokers, client id, security), for the
    producer and the admin client of ``siscom snapshot-writer``."""
    shared = (
        "bootstrap_servers",
        "client_id",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "ssl_context",
    )
    options = consumer_options(settings)
    return {name: options[name] for name in shared if name in options}


def new_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A consumer, not yet started, that joins no group and reads what the settings say."""
    quiet_aiokafka_repeats()
    return AIOKafkaConsumer(**consumer_options(settings))


def quiet_aiokafka_repeats(interval: float = AIOKAFKA_REPEAT_INTERVAL) -> None:
    """Let each aiokafka log line through at most once per ``interval`` seconds; idempotent.

    TLS failures are exempt: a broker certificate that does not verify (a wrong CA, a foreign or
    expired certificate) is a configuration error, and aiokafka's line is the only one that
    names it (``CERTIFICATE_VERIFY_FAILED``); our consumer's own line says only that the
    bootstrap failed. Those lines come at the pace of the reconnect backoff, which is capped.
    """
    limiter: RepeatLimiter | None = None
    for name in sorted(logging.root.manager.loggerDict):
        if name != "aiokafka" and not name.startswith("aiokafka."):
            continue
        library_logger = logging.getLogger(name)
        if any(isinstance(existing, RepeatLimiter) for existing in library_logger.filters):
            continue
        limiter = limiter or RepeatLimiter(interval, exempt=is_tls_failure)
        library_logger.addFilter(limiter)


def is_tls_failure(record: logging.LogRecord) -> bool:
    """True for a log record about a TLS failure (an ``ssl.SSLError`` among its arguments)."""
    causes = list(record.args) if isinstance(record.args, tuple) else []
    if record.exc_info:
        causes.append(record.exc_info[1])
    for cause in causes:
        for _ in range(5):  # the error and a few of its causes
            if not isinstance(cause, BaseException):
                break
            if isinstance(cause, ssl.SSLError) or "[SSL" in str(cause):
                return True
            cause = cause.__cause__ or cause.__context__
    return False


async def fetch_metadata(consumer: AIOKafkaConsumer) -> ClusterMetadata:
    """Fresh metadata of the whole cluster, asked of the broker now.

    This is the request ``consumer.topics()`` makes, keeping the partitions it returns; the
    consumer's own copy is refreshed only every ``metadata_max_age_ms``, and only for assigned
    topics. (Private: ``AIOKafkaConsumer._client.fetch_all_metadata()``, aiokafka 0.14.)
    """
    return await consumer._client.fetch_all_metadata()


def broker_connections(consumer: AIOKafkaConsumer) -> dict[object, object]:
    """The consumer's connections to brokers, by node.

    One that is replaced by another broke: perhaps the broker restarted, faster than the probe
    could see. aiokafka reconnects by itself and says nothing, so this looks at its table of
    connections. (Private: ``AIOKafkaConsumer._client._conns``, a dict keyed by
    ``(node_id, ConnectionGroup)``, with a ``("bootstrap", ...)`` key while bootstrapping;
    aiokafka 0.14 client.py.)
    """
    return {key: conn for key, conn in consumer._client._conns.items() if isinstance(key[0], int)}


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, without the stray CancelledError aiokafka 0.14 can let out of it.

    When a fetch request is waiting out its retry backoff (the broker is gone), the fetcher's
    ``close()`` cancels that task and awaits it, re-raising its CancelledError in our task as if
    we had been cancelled. Stopping in a task of its own keeps the two apart: our own
    cancellation still interrupts the wait.
    """
    stopping = asyncio.ensure_future(consumer.stop())
    await asyncio.wait((stopping,))
    if not stopping.cancelled() and (error := stopping.exception()) is not None:
        raise error
