"""The stream with write coalescing off (STREAM_COALESCE_WRITES=false): every frame through ASGI.

That is the path under any server other than Hypercorn over HTTP/1.1, and the way back if a
Hypercorn upgrade breaks coalescing (siscom/web/server/coalesce.py), so a representative part of the
end-to-end stream tests runs here again on it: delivery byte for byte and in order, filters,
alerts, the snapshot, keep-alives, subscription changes, and the close on shutdown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from integration.test_stream import (  # noqa: F401  (collected here again, on the plain path)
    plain_server,  # noqa: F401  (over this module's shared_server)
    test_a_client_without_filter_receives_every_record_byte_for_byte,
    test_a_late_subscriber_first_gets_the_last_position_of_each_device,
    test_alerts_topic_records_arrive_as_alert_frames,
    test_clients_change_subscription_without_reconnecting,
    test_device_ids_filter_delivers_only_the_subscribed_devices,
    test_keep_alive_pings_arrive_at_the_configured_interval,
    test_sigterm_closes_clients_with_1001_and_exits_zero,
)
from support.server import ServerProcess


@pytest.fixture(scope="module")
def shared_server(module_server_factory) -> ServerProcess:
    """As tests/integration/test_stream.py's, with coalescing off."""
    return module_server_factory("plain-asgi", STREAM_COALESCE_WRITES="false")


@pytest.fixture
def make_server(server_factory, broker, topic) -> Callable[..., ServerProcess]:
    """As tests/conftest.py's ``make_server``, with coalescing off."""

    def make(env: Mapping[str, str] | None = None, **settings: Any) -> ServerProcess:
        merged = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "STREAM_COALESCE_WRITES": "false"}
        merged.update(env or {})
        merged.update({name: str(value) for name, value in settings.items()})
        return server_factory(merged)

    return make
