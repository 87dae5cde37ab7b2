"""Contract: how Hypercorn handles a client's pings and pongs, which the ping limit relies on.

:mod:`siscom.web.server.control_frames` counts pings and pongs inside Hypercorn's WebSocket stream,
because ASGI never carries them. It depends on three facts of Hypercorn's ``WSStream``
(``hypercorn/protocol/ws_stream.py``): the ASGI ``send`` given to the application is the bound
method ``WSStream.app_send``; after the accept, ``WSStream.connection`` is a wsproto
``Connection``; and incoming data is turned into events by iterating ``connection.events()``,
answering each ``Ping`` itself. These tests drive the real ``WSStream`` class (its collaborators,
the socket and the task group, are stand-ins) and fail, naming the Hypercorn version, when any
of that changes. Then either adapt the module or run with ``STREAM_WATCH_CONTROL_FRAMES=false``.
"""

from __future__ import annotations

import base64
import os
from importlib.metadata import version
from typing import Any

from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.protocol.events import Data, Request
from hypercorn.protocol.ws_stream import WSStream
from wsproto.connection import Connection
from wsproto.frame_protocol import FrameDecoder, Opcode

from siscom.web.server.control_frames import watch_control_frames

HYPERCORN = f"hypercorn {version('hypercorn')} (written against 0.18.0)"


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class FakeTaskGroup:
    """Records the ``send`` Hypercorn hands the application, as ``spawn_app`` would pass it on."""

    def __init__(self) -> None:
        self.app_send: Any = None
        self.app_messages: list[dict] = []

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
        self.app_send = send

        async def put(message: dict) -> None:
            self.app_messages.append(message)

        return put

    def spawn(self, *args: Any) -> None:
        pass


async def accepted_stream() -> tuple[WSStream, FakeTaskGroup, list[Any]]:
    sent: list[Any] = []

    async def send(event: Any) -> None:
        sent.append(event)

    group = FakeTaskGroup()
    stream = WSStream(
        app=None,
        config=Config(),
        context=WorkerContext(None),
        task_group=group,
        ssl=False,
        client=("127.0.0.1", 5000),
        server=("127.0.0.1", 8000),
        send=send,
        stream_id=1,
    )
    key = base64.b64encode(os.urandom(16))
    headers = [
        (b"host", b"127.0.0.1"),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", key),
        (b"sec-websocket-version", b"13"),
    ]
    await stream.handle(
        Request(stream_id=1, headers=headers, http_version="1.1", method="GET", raw_path=b"/", state={})
    )
    assert group.app_send is not None, f"{HYPERCORN}: no ASGI send reached the application"
    await group.app_send({"type": "websocket.accept"})
    return stream, group, sent


def pongs_in(sent: list[Any]) -> int:
    decoder = FrameDecoder(client=True, extensions=[])
    for event in sent:
        if isinstance(event, Data):
            decoder.receive_bytes(event.data)
    count = 0
    while (frame := decoder.process_buffer()) is not None:
        count += frame.opcode is Opcode.PONG
    return count


async def test_the_asgi_send_hypercorn_gives_the_app_leads_to_its_wsproto_connection() -> None:
    stream, group, _ = await accepted_stream()
    assert getattr(group.app_send, "__self__", None) is stream, f"{HYPERCORN}: ASGI send is not WSStream.app_send"
    assert isinstance(getattr(stream, "connection", None), Connection), f"{HYPERCORN}: no wsproto connection"


async def test_hypercorn_answers_pings_itself_and_never_tells_the_app() -> None:
    stream, group, sent = await accepted_stream()
    await stream.handle(Data(stream_id=1, data=client_frame(0x9, b"hi") * 3 + client_frame(0xA)))
    assert pongs_in(sent) == 3, f"{HYPERCORN}: pings are no longer answered by the server itself"
    assert group.app_messages == [{"type": "websocket.connect"}], f"{HYPERCORN}: the app now sees control frames"


async def test_watched_pings_and_pongs_are_reported_and_past_the_allowance_not_answered() -> None:
    stream, group, sent = await accepted_stream()
    seen: list[int] = []

    def allow() -> bool:
        seen.append(1)
        return len(seen) <= 2

    assert watch_control_frames(group.app_send, allow, lambda: True), f"{HYPERCORN}: the watch was not installed"
    await stream.handle(Data(stream_id=1, data=client_frame(0x1, b"{}") + client_frame(0xA) + client_frame(0x9)))
    assert len(seen) == 2, f"{HYPERCORN}: pings and pongs no longer pass through connection.events()"
    assert group.app_messages[-1]["text"] == "{}", f"{HYPERCORN}: messages no longer reach the app"
    await stream.handle(Data(stream_id=1, data=client_frame(0x9) * 4 + client_frame(0x1, b"after")))
    await stream.handle(Data(stream_id=1, data=client_frame(0x9) + client_frame(0x1, b"later")))
    assert len(seen) == 3, f"{HYPERCORN}: the connection did not go deaf past the allowance"
    assert pongs_in(sent) == 1, f"{HYPERCORN}: pings past the allowance were answered"
    assert group.app_messages[-1]["text"] == "{}", f"{HYPERCORN}: messages past the allowance reached the app"


async def test_the_connection_goes_deaf_once_the_session_stops_listening() -> None:
    stream, group, sent = await accepted_stream()
    listening = [True]
    assert watch_control_frames(group.app_send, lambda: True, lambda: listening[0])
    await stream.handle(Data(stream_id=1, data=client_frame(0x1, b"1")))
    listening[0] = False
    await stream.handle(Data(stream_id=1, data=client_frame(0x1, b"2") + client_frame(0x9)))
    await stream.handle(Data(stream_id=1, data=client_frame(0x1, b"3")))
    texts = [message.get("text") for message in group.app_messages[1:]]
    assert texts == ["1"] and pongs_in(sent) == 0, f"{HYPERCORN}: {texts}"


async def test_the_watch_refuses_anything_that_is_not_an_accepted_hypercorn_stream() -> None:
    async def plain_send(message: dict) -> None:
        pass

    assert not watch_control_frames(plain_send, lambda: True, lambda: True)
    assert not watch_control_frames(None, lambda: True, lambda: True)
    stream, group, _ = await accepted_stream()
    assert watch_control_frames(group.app_send, lambda: True, lambda: True)
    assert not watch_control_frames(group.app_send, lambda: True, lambda: True), "installed twice on one connection"
