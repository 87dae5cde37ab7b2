"""What an open stream costs the server in asyncio tasks.

A crowd of idle dashboards holds the server's memory mostly in what waits for each of them, and
every task is a coroutine, its frame, a context and a future or two. The gateway runs in the
test's event loop (served by Hypercorn, clients on real sockets), so the tasks each connection
adds can be named by what they run: Hypercorn's and Quart's, and the session's one. A session
reads what its client sends from the route's task (siscom/web/attend.py), not from a task of
its own; and a WebSocket route runs in the server's task for the application, not in a task
Quart would start for it (siscom/web/server/ws_transport.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from chaos.inprocess import InProcessServer
from chaos.rawws import RawWebSocket
from support.sse import open_sse
from support.status import wait_stats

from siscom.config import Settings

CLIENTS = 20
#: Where the tasks that serve a connection run (the pipeline's and the broker client's are not counted).
_SERVING = ("/hypercorn/", "/quart/", "/siscom/web/", "/siscom/sessions/")


def _serving_tasks() -> Counter[str]:
    """The tasks serving connections now, by the coroutine they run."""
    kinds: Counter[str] = Counter()
    for task in asyncio.all_tasks():
        code = task.get_coro().cr_code  # type: ignore[union-attr]
        if any(part in code.co_filename for part in _SERVING):
            kinds[code.co_qualname] += 1
    return kinds


_CONNECTION = "worker_serve.<locals>._server_callback"  # Hypercorn's task per connection (TCPServer.run)


async def _serving(connections: int) -> Counter[str]:
    """The serving tasks once exactly ``connections`` connections are served (the server's
    start-up checks and the test's stats requests have ended)."""
    for _ in range(100):
        kinds = _serving_tasks()
        if kinds[_CONNECTION] == connections:
            return kinds
        await asyncio.sleep(0.05)
    raise AssertionError(f"not {connections} connections served: {kinds}")


def _settings(broker, topic) -> Settings:
    return Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "KAFKA_FETCH_MAX_WAIT_MS": "10"}
    )


def _per_connection(added: Counter[str]) -> dict[str, float]:
    return {name: count / CLIENTS for name, count in sorted(added.items())}


async def _tasks_per_connection(
    broker, topic, connect: Callable[[InProcessServer], Awaitable[Any]], leave: Callable[[Any], None]
) -> dict[str, float]:
    """The serving tasks each of CLIENTS open streams adds, opened by ``connect`` and ended by
    ``leave`` (the server stopped afterwards)."""
    async with InProcessServer(_settings(broker, topic)) as server:
        before = await _serving(0)
        clients = [await connect(server) for _ in range(CLIENTS)]
        try:
            await wait_stats(server, lambda s: s["connections"] == CLIENTS)
            added = await _serving(CLIENTS) - before
        finally:
            for client in clients:
                leave(client)
            await wait_stats(server, lambda s: s["connections"] == 0)
    return _per_connection(added)


async def test_an_open_websocket_stream_costs_the_server_four_tasks_and_only_one_is_the_sessions(broker, topic):
    per_connection = await _tasks_per_connection(
        broker,
        topic,
        lambda server: RawWebSocket.connect(server.ws_url("/api/v1/stream?device_ids=tasks-1")),
        lambda client: client.close(),
    )
    assert per_connection == {
        "ASGIWebsocketConnection.handle_messages": 1,  # Quart: what the client sends
        "Session.run": 1,  # the session's pump
        _CONNECTION: 1,  # Hypercorn: the connection
        "_handle": 1,  # Hypercorn: the ASGI application, which runs the route, which reads for the session
    }


async def test_an_open_event_stream_costs_the_session_one_task_of_its_own(broker, topic):
    per_connection = await _tasks_per_connection(
        broker,
        topic,
        lambda server: open_sse(f"{server.url}/api/v1/stream?device_ids=tasks-1", timeout=10),
        lambda client: client.abort(),
    )
    sessions = {name: count for name, count in per_connection.items() if "Session" in name}
    assert sessions == {"Session.run": 1}
