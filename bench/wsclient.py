"""A bare WebSocket client for load: just enough protocol to read a stream cheaply.

The benchmark runs thousands of clients on the same two cores as the server it measures, so a
client must cost far less per frame than the server does, or the clients become the bottleneck
and the figures describe them instead of the server. A full client library parses every frame
through a state machine and wakes a coroutine per message; this one is an
:class:`asyncio.Protocol` that splits each chunk the socket delivers into frames in one loop
(:func:`bench.rfc6455.split_frames`, the codec the tests' raw client uses too) and hands
every text frame, with the time the chunk arrived, to a callback.

*The time the chunk arrived* is the kernel's, not the client's: :func:`connect_opened` reads
the socket itself (:class:`TimedSocket`, in place of asyncio's transport) with
``SO_TIMESTAMPNS`` on, each read a ``recvmsg`` that says when its data reached the socket, and
the client protocols (this one and the SSE one) take that stamp. A client process with hundreds
of sockets reads a socket only when its event loop gets to it, on a machine where it competes
for the cores with the server it measures; timing frames with the clock at read time added that
wait (hundreds of milliseconds on a loaded two-core machine, the same for every server) to every
latency. Where the kernel gives no stamp the clock at read time is used.

It asks for no subprotocol, and for compression (permessage-deflate, RFC 7692) only when told
to, as browsers always do: the server then compresses every frame for every client separately,
which the benchmark can show. It answers pings and close frames as RFC 6455 requires and
otherwise only listens.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import zlib
from collections.abc import Callable
from typing import TypeVar, cast

from bench import rfc6455
from bench.rfc6455 import DEFLATE_TAIL, OP_BINARY, OP_TEXT, RSV1, HandshakeFailed, split_frames

__all__ = ["HandshakeFailed", "OnText", "StreamClient", "TimedSocket", "arrival", "connect_opened", "open_stream"]

OnText = Callable[[bytes, float], None]
#: A client protocol with an ``opened`` future and ``abort()`` (this module's, or the SSE one's).
Opening = TypeVar("Opening", bound=asyncio.Protocol)
#: ``(arrived, read)`` of every read: when its data reached the socket, and when it was read.
OnRead = Callable[[float, float], None]

#: Linux's SO_TIMESTAMPNS (asm-generic/socket.h; the ``socket`` module does not name it): a
#: ``struct timespec`` of the receive time in each ``recvmsg``'s ancillary data.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
_READ_SIZE = 256 * 1024


def arrival(transport: object) -> float:
    """When the data being handled reached the socket: the kernel's stamp when the protocol is
    driven by a :class:`TimedSocket`, else now."""
    return getattr(transport, "arrived", 0.0) or time.time()


class TimedSocket:
    """A connected socket read with the kernel's receive stamps, driving an :class:`asyncio.Protocol`.

    It offers the part of asyncio's transport these clients use (``write``, ``close``, ``abort``,
    ``is_closing``) and, while the protocol handles a read, :attr:`arrived`. The protocol's
    ``on_read`` attribute, when set, is told ``(arrived, read)`` of every read.
    """

    def __init__(self, sock: socket.socket, protocol: asyncio.Protocol) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._pending = bytearray()  # what the socket did not take yet
        self._closing = False
        #: When the data of the read being handled reached the socket (POSIX time).
        self.arrived = 0.0

    def start(self) -> None:
        self._loop.add_reader(self._fd, self._readable)
        self._protocol.connection_made(self)  # type: ignore[arg-type]

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data, ancillary, _, _ = sock.recvmsg(_READ_SIZE, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._shut(error)
            return
        if not data:
            self._shut(None)
            return
        read = time.time()
        arrived = read
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                arrived = seconds + nanoseconds * 1e-9
        self.arrived = arrived
        on_read = getattr(self._protocol, "on_read", None)
        if on_read is not None:
            on_read(arrived, read)
        self._protocol.data_received(data)

    def write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None or self._closing:
            return
        if not self._pending:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as error:
                self._shut(error)
                return
            data = data[sent:]
            if not data:
                return
            self._loop.add_writer(self._fd, self._writable)
        self._pending += data

    def _writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._shut(error)
            return
        del self._pending[:sent]
        if not self._pending:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._shut(None)

    def is_closing(self) -> bool:
        return self._closing or self._sock is None

    def close(self) -> None:
        """Close once what is pending is written (as asyncio's transports do)."""
        if self._pending:
            self._closing = True
        else:
            self._shut(None)

    def abort(self) -> None:
        self._shut(None)

    def _shut(self, error: Exception | None) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        sock.close()
        # As asyncio does: the protocol hears of it in a later turn, never inside its own call.
        self._loop.call_soon(self._protocol.connection_lost, error)


class StreamClient(asyncio.Protocol):
    """One connection. ``on_text(payload, arrived)`` gets every text frame, in order."""

    transport = "websocket"
    #: Told ``(arrived, read)`` of every read, when set (see :class:`TimedSocket`).
    on_read: OnRead | None = None

    def __init__(self, host: str, port: int, path: str, on_text: OnText, *, deflate: bool = False) -> None:
        self._handshake = rfc6455.ClientHandshake(host, port, path, deflate=deflate)
        #: Set when the server agreed to compress; one context for the whole connection.
        self._inflater: zlib._Decompress | None = None
        self._on_text = on_text
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        loop = asyncio.get_running_loop()
        #: Resolves once the server answered 101 (or fails with the reason it did not).
        self.opened: asyncio.Future[None] = loop.create_future()
        #: Resolves with the server's close code (1006 when the connection just dropped).
        self.closed: asyncio.Future[int] = loop.create_future()
        self.close_code: int | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # a stream's: it writes
        transport.write(self._handshake.request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded and not self._read_handshake():
            return
        arrived = arrival(self._transport)
        on_text = self._on_text
        for first, payload in split_frames(buffer):
            opcode = first & 0x0F
            if opcode == OP_TEXT:
                if first & RSV1 and self._inflater is not None:  # a compressed message
                    payload = self._inflater.decompress(payload + DEFLATE_TAIL)
                on_text(payload, arrived)
            elif opcode != OP_BINARY:
                self._control(opcode, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeFailed("connection closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code if self.close_code is not None else 1006)

    # Protocol details

    def _read_handshake(self) -> bool:
        try:
            head = rfc6455.take_head(self._buffer)
            if head is None:
                return False
            deflate = self._handshake.accept(head)
        except HandshakeFailed as failed:
            self._fail(failed)
            return False
        if deflate:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            self.transport = "websocket+deflate"  # what the client reports it spoke
        self._upgraded = True
        self.opened.set_result(None)
        return True

    def _fail(self, failed: HandshakeFailed) -> None:
        if not self.opened.done():
            self.opened.set_exception(failed)
        if self._transport is not None:
            self._transport.close()

    def _control(self, opcode: int, payload: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if opcode == rfc6455.OP_PING:
            transport.write(rfc6455.masked_frame(payload, rfc6455.OP_PONG))
        elif opcode == rfc6455.OP_CLOSE:
            self.close_code = rfc6455.close_code(payload)
            transport.write(rfc6455.masked_frame(payload[:2], rfc6455.OP_CLOSE))
            transport.close()

    # For the owner

    def send_text(self, text: str) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(rfc6455.masked_frame(text.encode()))

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the server's answer (or a drop) resolves :attr:`closed`."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._upgraded:
            transport.write(rfc6455.masked_frame(code.to_bytes(2, "big"), rfc6455.OP_CLOSE))
        else:
            transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


async def connect_opened(make: Callable[[], Opening], host: str, port: int, timeout: float) -> Opening:
    """Connect a protocol made by ``make`` through a :class:`TimedSocket` and wait for its
    ``opened``; raise (and drop the connection) if either fails within ``timeout``."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:  # not Linux: data is timed at read
        pass
    protocol = make()
    transport: TimedSocket | None = None
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
            transport = TimedSocket(sock, protocol)
            transport.start()
            await protocol.opened  # type: ignore[attr-defined]
    except BaseException:
        if transport is not None:
            transport.abort()
        else:
            sock.close()
        raise
    return protocol


async def open_stream(
    host: str, port: int, path: str, on_text: OnText, *, deflate: bool = False, timeout: float = 10.0
) -> StreamClient:
    """Connect and complete the WebSocket handshake; raise if either fails within ``timeout``."""
    return await connect_opened(lambda: StreamClient(host, port, path, on_text, deflate=deflate), host, port, timeout)
