"""What this project relies on in its dependencies beyond their documented API, checked.

Each private attribute or method the code uses, or overrides, has a check here. An upgrade that
renames or reshapes one fails this file loudly, naming the dependency, its installed version and
the use, instead of failing at run time (aiokafka) or, worse, silently no longer applying (an
override of a Quart method that Quart stopped calling). The uses:

- aiokafka: ``AIOKafkaConsumer._client.fetch_all_metadata()`` and ``._client._conns``, in
  ``siscom/pipeline/kafka.py``.
- Quart: ``Websocket._send`` and ``._receive`` (called by ``StreamWebsocket.send`` and
  ``.receive``) and ``ASGIWebsocketConnection.send_data`` (overridden by
  ``StreamWebsocketConnection``), its ``queue`` (replaced by an ``Inbox``), ``handle_messages``
  and ``handle_websocket`` (called by its ``__call__``), in ``siscom/web/server/ws_transport.py``,
  installed through ``Quart.websocket_class`` and ``Quart.asgi_websocket_class``.
- Quart: ``ASGIHTTPConnection._create_request_from_scope`` and ``._send_response``
  (overridden by ``StreamHTTPConnection`` in ``siscom/web/server/sse_transport.py``, installed through
  ``Quart.asgi_http_class``).
- Werkzeug: ``Request.args`` is a ``cached_property`` whose ``fget`` parses the query, called
  uncached by ``siscom.web.server.query.query_args``.
- tenacity: a ``RetryCallState`` built by hand, in ``supervisors/backoff.py``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

import aiokafka.client
import pytest
import tenacity
from aiokafka import AIOKafkaConsumer
from quart import Quart, websocket
from quart.asgi import ASGIHTTPConnection, ASGIWebsocketConnection
from quart.signals import websocket_sent
from quart.wrappers import Websocket

from siscom.web.server.sse_transport import StreamHTTPConnection
from siscom.web.server.ws_transport import StreamWebsocket, StreamWebsocketConnection
from supervisors.backoff import RestartBackoff


def broken(distribution: str, use: str, found: object) -> str:
    """The failure message: which dependency, which version, what we use, what is there now."""
    return (
        f"{distribution} {version(distribution)} no longer provides what siscom relies on: {use}. "
        f"Found: {found}. Adapt the code that uses it (see this test's docstring) or pin the "
        f"version that has it."
    )


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


# -- aiokafka ------------------------------------------------------------------------------------


@pytest.fixture
async def consumer() -> AsyncIterator[AIOKafkaConsumer]:
    """A real consumer, never started (nothing listens on its port), closed afterwards."""
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", group_id=None)
    yield consumer
    await consumer.stop()


def client_class() -> type:
    client = getattr(aiokafka.client, "AIOKafkaClient", None)
    assert isinstance(client, type), broken("aiokafka", "aiokafka.client.AIOKafkaClient", client)
    return client


def bare_websocket(query: bytes = b"", *, receive: Any = None, send: Any = None) -> Websocket:
    """Quart's websocket object for ``/`` with ``query``, built outside any app."""
    return Websocket(
        "/",
        query,
        "ws",
        {},
        "",
        "1.1",
        [],
        receive=receive,
        send=send,
        accept=None,
        close=None,
        scope={"type": "websocket"},
    )


def websocket_scope() -> dict[str, Any]:
    """The ASGI scope of a WebSocket to ``/ws`` from loopback, as a server hands it to the app."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "subprotocols": [],
        "extensions": {},
    }


async def test_aiokafka_consumer_has_a_client_that_fetches_all_metadata_on_demand(consumer):
    client = getattr(consumer, "_client", None)
    use = "AIOKafkaConsumer._client, an AIOKafkaClient"
    assert isinstance(client, client_class()), broken("aiokafka", use, type(client))
    fetch = getattr(client_class(), "fetch_all_metadata", None)
    use = "async AIOKafkaClient.fetch_all_metadata(self) -> ClusterMetadata"
    assert inspect.iscoroutinefunction(fetch), broken("aiokafka", use, fetch)
    assert parameters(fetch) == ["self"], broken("aiokafka", use, inspect.signature(fetch))
    source = inspect.getsource(fetch)
    assert "ClusterMetadata(" in source and "return" in source, broken("aiokafka", use, source)


async def test_aiokafka_client_keeps_its_connections_in_a_dict_keyed_by_node_id_and_group(consumer):
    conns = getattr(consumer._client, "_conns", None)
    use = "AIOKafkaClient._conns, a dict of connections keyed by (node_id, ConnectionGroup)"
    assert isinstance(conns, dict), broken("aiokafka", use, type(conns))
    get_conn = getattr(client_class(), "_get_conn", None)
    assert callable(get_conn), broken("aiokafka", use + ", filled by AIOKafkaClient._get_conn", get_conn)
    assert parameters(get_conn)[:2] == ["self", "node_id"] and "group" in parameters(get_conn), broken(
        "aiokafka", use, inspect.signature(get_conn)
    )
    group = getattr(aiokafka.client, "ConnectionGroup", None)
    default = inspect.signature(get_conn).parameters["group"].default
    assert group is not None and default is group.DEFAULT, broken("aiokafka", use, default)
    source = inspect.getsource(get_conn)
    assert "conn_id = (node_id, group)" in source and "self._conns[conn_id] =" in source, broken(
        "aiokafka", use, "a _get_conn that stores connections differently"
    )


# -- Quart ---------------------------------------------------------------------------------------


def test_quart_websocket_keeps_the_asgi_send_it_was_given_as_send():
    sent = object()
    ws = bare_websocket(send=sent)
    use = "Websocket._send, the send callable given to Websocket(..., send=...)"
    assert getattr(ws, "_send", None) is sent, broken("Quart", use, vars(ws).keys())


def test_quart_asgi_websocket_connection_sends_frames_through_send_data():
    send_data = getattr(ASGIWebsocketConnection, "send_data", None)
    use = "async ASGIWebsocketConnection.send_data(self, send, data), overridden in siscom.web.server.ws_transport"
    assert inspect.iscoroutinefunction(send_data), broken("Quart", use, send_data)
    assert parameters(send_data) == parameters(StreamWebsocketConnection.send_data) == ["self", "send", "data"], broken(
        "Quart", use, inspect.signature(send_data)
    )
    source = inspect.getsource(ASGIWebsocketConnection._create_websocket_from_scope)
    assert "self.app.websocket_class(" in source and "partial(self.send_data, send)" in source, broken(
        "Quart", use + "; Quart.websocket_class built with partial(self.send_data, send)", source
    )


def test_quart_asgi_websocket_connection_queues_what_the_client_sends_only_through_put_and_get():
    use = "ASGIWebsocketConnection.queue: put by handle_messages, its get the websocket's receive (replaced by Inbox)"
    init = inspect.getsource(ASGIWebsocketConnection.__init__)
    build = inspect.getsource(ASGIWebsocketConnection._create_websocket_from_scope)
    messages = inspect.getsource(ASGIWebsocketConnection.handle_messages)
    assert "self.queue" in init and "self.queue.get," in build, broken("Quart", use, build)
    assert "await self.queue.put(message)" in messages, broken("Quart", use, messages)
    everything = inspect.getsource(__import__("quart.asgi").asgi)
    assert everything.count("self.queue") == 3, broken(
        "Quart", use + " (and nowhere else)", everything.count("self.queue")
    )
    ws = bare_websocket(receive=len)
    assert getattr(ws, "_receive", None) is len, broken(
        "Quart", "Websocket._receive, the receive callable", vars(ws).keys()
    )


def test_quart_asgi_websocket_connection_runs_a_receiving_and_a_route_coroutine_stream_websocket_connection_calls():
    use = "ASGIWebsocketConnection.handle_messages(receive) and handle_websocket(websocket, send), run by __call__"
    assert parameters(ASGIWebsocketConnection.handle_messages) == ["self", "receive"], broken("Quart", use, None)
    assert parameters(ASGIWebsocketConnection.handle_websocket) == ["self", "websocket", "send"], broken(
        "Quart", use, None
    )
    call = inspect.getsource(ASGIWebsocketConnection.__call__)
    assert "self.handle_messages(receive)" in call and "self.handle_websocket(websocket, send)" in call, broken(
        "Quart", use, call
    )


async def test_a_route_reads_what_the_client_sends_and_ends_when_the_client_leaves():
    """End to end through Quart's ASGI entry with the overrides: a message reaches the route; the
    client's leaving cancels the route, and the application returns normally."""
    app = Quart(__name__)
    app.websocket_class = StreamWebsocket
    app.asgi_websocket_class = StreamWebsocketConnection
    seen: list[object] = []

    @app.websocket("/ws")
    async def route():
        await websocket.accept()
        seen.append(await websocket.receive())
        try:
            await asyncio.Event().wait()  # until the client leaves
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in ({"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}):
        await incoming.put(message)
    scope = websocket_scope()
    outgoing: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        outgoing.append(message)
        if message["type"] == "websocket.accept":
            await incoming.put({"type": "websocket.disconnect", "code": 1001})

    async with asyncio.timeout(5):
        await app(scope, incoming.get, send)
    assert seen == ["hi", "cancelled"]
    assert asyncio.current_task().cancelling() == 0  # the route's cancellation was taken back


def test_werkzeug_request_args_parse_the_query_in_a_function_the_gateway_calls_without_caching():
    from werkzeug.local import LocalProxy
    from werkzeug.sansio.request import Request as SansIORequest
    from werkzeug.utils import cached_property

    from siscom.web.server.query import query_args

    use = "werkzeug.sansio.request.Request.args, a cached_property whose fget parses the query"
    assert isinstance(vars(SansIORequest).get("args"), cached_property), broken(
        "Werkzeug", use, vars(SansIORequest).get("args")
    )
    ws = bare_websocket(b"device_ids=a,b&device_ids=c&token=%20t")
    parsed = query_args(ws)
    assert query_args(LocalProxy(lambda: ws)) == parsed  # as Quart's websocket and request globals
    assert "args" not in vars(ws), broken("Werkzeug", use + " (nothing cached on the object)", vars(ws).keys())
    assert parsed == ws.args and parsed.getlist("device_ids") == ["a,b", "c"] and parsed["token"] == " t"


async def test_a_frame_sent_by_a_route_goes_through_the_streaming_overrides_and_nothing_else():
    """End to end through Quart's ASGI entry: the overrides apply, Quart's per-frame work is gone."""
    overridden: list[str | bytes] = []

    class Spy(StreamWebsocketConnection):
        """Notes each frame our override handles (an override Quart never calls notes nothing)."""

        async def send_data(self, send: Any, data: str | bytes) -> None:
            overridden.append(data)
            await super().send_data(send, data)

    app = Quart(__name__)
    app.websocket_class = StreamWebsocket
    app.asgi_websocket_class = Spy
    seen: dict[str, object] = {}

    @app.websocket("/ws")
    async def route():
        seen["class"] = type(websocket._get_current_object())
        await websocket.accept()
        await websocket.send("hello")

    signals = []

    async def on_sent(*args: object, **kwargs: object) -> None:
        signals.append(args)

    websocket_sent.connect(on_sent)  # Quart sends it with the frame as the sender
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await incoming.put({"type": "websocket.connect"})
    outgoing: list[dict[str, Any]] = []
    scope = websocket_scope()

    async def send(message: dict[str, Any]) -> None:
        outgoing.append(message)
        if message["type"] == "websocket.close":
            await incoming.put({"type": "websocket.disconnect", "code": 1000})

    try:
        async with asyncio.timeout(5):
            await app(scope, incoming.get, send)
    finally:
        websocket_sent.disconnect(on_sent)

    use = "Quart.websocket_class / asgi_websocket_class used for every websocket"
    assert seen.get("class") is StreamWebsocket, broken("Quart", use, seen.get("class"))
    frames = [m for m in outgoing if m["type"] == "websocket.send"]
    assert frames == [{"type": "websocket.send", "bytes": None, "text": "hello"}], broken(
        "Quart", "frames handed to ASGI send as websocket.send messages", outgoing
    )
    use = "ASGIWebsocketConnection.send_data called for each frame (overridden: no websocket_sent signal)"
    assert overridden == ["hello"], broken("Quart", use, overridden)
    assert signals == [], broken("Quart", use, signals)


def test_quart_asgi_http_connection_builds_requests_and_sends_responses_where_the_sse_route_expects():
    """The SSE route writes its response itself (siscom/web/server/sse_transport.py): it needs the ASGI
    send on the request, and Quart must send nothing once the route has answered; and the reason
    it does so is that Quart sends a returned response under RESPONSE_TIMEOUT."""
    use = (
        "ASGIHTTPConnection._create_request_from_scope(self, send) and async _send_response(self, send, "
        "response), overridden by siscom.web.server.sse_transport.StreamHTTPConnection"
    )
    create = getattr(ASGIHTTPConnection, "_create_request_from_scope", None)
    send_response = getattr(ASGIHTTPConnection, "_send_response", None)
    assert parameters(create) == parameters(StreamHTTPConnection._create_request_from_scope) == ["self", "send"], (
        broken("Quart", use, create and inspect.signature(create))
    )
    assert inspect.iscoroutinefunction(send_response), broken("Quart", use, send_response)
    assert parameters(send_response) == ["self", "send", "response"], broken(
        "Quart", use, inspect.signature(send_response)
    )
    source = inspect.getsource(ASGIHTTPConnection.handle_request)
    assert "self._send_response(send, response)" in source and "RESPONSE_TIMEOUT" in source, broken(
        "Quart", use + "; handle_request sends through _send_response under RESPONSE_TIMEOUT", source
    )
    call = inspect.getsource(ASGIHTTPConnection.__call__)
    assert "_create_request_from_scope(send)" in call and "cancel_tasks(pending)" in call, broken(
        "Quart", "ASGIHTTPConnection.__call__ cancels the route when the receiver ends (http.disconnect)", call
    )


# -- tenacity ------------------------------------------------------------------------------------


class Boom(Exception):
    pass


class RecordingWait(tenacity.wait.wait_base):
    def __init__(self) -> None:
        self.asked: list[tuple[int, type[BaseException] | None]] = []

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        self.asked.append((retry_state.attempt_number, type(error) if error else None))
        return 0.0


def test_tenacity_retry_call_state_can_be_built_as_backoff_builds_it():
    use = "RetryCallState(retry_object, fn, args, kwargs) with settable attempt_number"
    init = tenacity.RetryCallState.__init__
    assert parameters(init) == ["self", "retry_object", "fn", "args", "kwargs"], broken(
        "tenacity", use, inspect.signature(init)
    )
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = 3
    error = Boom()
    state.set_exception((Boom, error, None))
    use = "RetryCallState.set_exception(exc_info) storing a failed outcome"
    assert state.outcome is not None and state.outcome.failed and state.outcome.exception() is error, broken(
        "tenacity", use, state.outcome
    )
    assert state.outcome.attempt_number == 3, broken("tenacity", "outcome numbered by attempt_number", state.outcome)
    wait = RecordingWait()
    assert tenacity.Retrying(wait=wait).wait is wait, broken("tenacity", "Retrying(wait=w).wait is w", None)


def test_restart_backoff_asks_its_wait_strategy_what_tenacity_itself_would_ask():
    """Run tenacity for real, then ask RestartBackoff the same: the wait must see the same states."""
    by_tenacity = RecordingWait()
    failures = iter([Boom(), Boom(), ValueError()])

    def flaky() -> None:
        error = next(failures, None)
        if error is not None:
            raise error

    tenacity.Retrying(wait=by_tenacity, retry=tenacity.retry_if_exception_type(Exception), sleep=lambda _: None)(flaky)

    by_backoff = RecordingWait()
    backoff = RestartBackoff(by_backoff)
    for attempt, error in enumerate([Boom(), Boom(), ValueError()], start=1):
        backoff.delay(attempt, error)

    assert by_tenacity.asked == [(1, Boom), (2, Boom), (3, ValueError)]
    assert by_backoff.asked == by_tenacity.asked, broken(
        "tenacity", "the RetryCallState a wait strategy is given after attempt N", by_tenacity.asked
    )
