"""Everything this project asks of aiokafka beyond its documented API, in one place.

The consumer actor talks to the broker only through these functions and the public methods of
:class:`aiokafka.AIOKafkaConsumer` (``start``, ``getmany``, ``assign``, ``seek``,
``seek_to_beginning``, ``position``, ``highwater``). Two private attributes of aiokafka are used
here and nowhere else: ``AIOKafkaConsumer._client`` with its ``fetch_all_metadata()`` and its
``_conns`` table. ``tests/unit/test_dependency_contracts.py`` fails, naming aiokafka and its
version, when either is missing or changed.
"""

from __future__ import annotations

import asyncio
import os
import socket

from aiokafka import AIOKafkaConsumer
from aiokafka.cluster import ClusterMetadata
from aiokafka.helpers import create_ssl_context

from siscom.config import Settings

__all__ = ["broker_connections", "consumer_options", "fetch_metadata", "new_consumer", "stop_consumer"]

#: New partitions and recreated topics show up in aiokafka's own metadata within this long.
METADATA_MAX_AGE_MS = 5000


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


def new_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A consumer, not yet started, that joins no group and reads what the settings say."""
    return AIOKafkaConsumer(**consumer_options(settings))


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
