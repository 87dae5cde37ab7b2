"""A bare WebSocket client for load: just enough protocol to read a stream cheaply.

The benchmark runs thousands of clients on the same two cores as the server it measures, so a
client must cost far less per frame than the server does, or the clients become the bottleneck
and the figures describe them instead of the server. A full client library parses every frame
through a state machine and wakes a coroutine per message; this one watches its socket with
``loop.add_reader``, splits each chunk it reads into frames in one loop
(:func:`siscom.dev.rfc6455.split_frames`, the codec the tests' raw client uses too) and hands
every text frame, with the time the chunk arrived, to a callback.

*The time the chunk arrived* is the kernel's, not the client's: the socket has
``SO_TIMESTAMPNS`` on and each read is a ``recvmsg`` that returns when the last segment of the
chunk reached the socket. A client process with hundreds of sockets reads a socket only when its
event loop gets to it, on a machine where it competes for the cores with the server it measures;
timing frames with the clock at read time added that wait (hundreds of milliseconds on a loaded
two-core machine, the same for every server) to every latency. Where the kernel gives no stamp
the clock at read time is used.

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

from siscom.dev import rfc6455
from siscom.dev.rfc6455 import DEFLATE_TAIL, OP_BINARY, OP_TEXT, RSV1, HandshakeFailed, split_frames

__all__ = ["HandshakeFailed", "OnText", "StreamClient", "open_stream"]

OnText = Callable[[bytes, float], None]

#: Linux's SO_TIMESTAMPNS (asm-generic/socket.h; the ``socket`` module does not name it): a
#: ``struct timespec`` of the receive time in each ``recvmsg``'s ancillary data.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
_READ_SIZE = 256 * 1024


class StreamClient:
    """One connection. ``on_text(payload, arrived)`` gets every text frame, in order."""

    def __init__(self, host: str, port: int, path: str, on_text: OnText, *, deflate: bool = False) -> None:
        self._handshake = rfc6455.ClientHandshake(host, port, path, deflate=deflate)
        #: Set when the server agreed to compress; one context for the whole connection.
        self._inflater: zlib._Decompress | None = None
        self._on_text = on_text
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._closing = False
        self._buffer = bytearray()
        self._pending = bytearray()  # bytes the socket did not take yet
        self._upgraded = False
        #: Resolves once the server answered 101 (or fails with the reason it did not).
        self.opened: asyncio.Future[None] = self._loop.create_future()
        #: Resolves with the server's close code (1006 when the connection just dropped).
        self.closed: asyncio.Future[int] = self._loop.create_future()
        self.close_code: int | None = None
        #: Told ``(arrived, read)`` of every read: when the data reached the socket and when the
        #: client read it (what timing at read would have added).
        self.on_read: Callable[[float, float], None] | None = None

    def start(self, sock: socket.socket) -> None:
        """Take a connected non-blocking socket and send the handshake."""
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._readable)
        self._write(self._handshake.request)

    # Socket I/O

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data, ancillary, _, _ = sock.recvmsg(_READ_SIZE, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._lost(error)
            return
        if not data:
            self._lost(None)
            return
        now = time.time()
        arrived = now
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                arrived = seconds + nanoseconds * 1e-9
        if self.on_read is not None:
            self.on_read(arrived, now)
        self.data_received(data, arrived)

    def _write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None or self._closing:
            return
        if not self._pending:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as error:
                self._lost(error)
                return
            data = data[sent:]
            if not data:
                return
            self._loop.add_writer(sock.fileno(), self._writable)
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
            self._lost(error)
            return
        del self._pending[:sent]
        if not self._pending:
            self._loop.remove_writer(sock.fileno())
            if self._closing:
                self._shut()

    def _shut(self) -> None:
        """Close the socket now; what is still unsent is lost."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
            sock.close()
        self._lost(None)

    def _lost(self, exc: Exception | None) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
            sock.close()
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeFailed("connection closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code if self.close_code is not None else 1006)

    def data_received(self, data: bytes, arrived: float) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded and not self._read_handshake():
            return
        on_text = self._on_text
        for first, payload in split_frames(buffer):
            opcode = first & 0x0F
            if opcode == OP_TEXT:
                if first & RSV1 and self._inflater is not None:  # a compressed message
                    payload = self._inflater.decompress(payload + DEFLATE_TAIL)
                on_text(payload, arrived)
            elif opcode != OP_BINARY:
                self._control(opcode, payload)

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
        self._upgraded = True
        self.opened.set_result(None)
        return True

    def _fail(self, failed: HandshakeFailed) -> None:
        if not self.opened.done():
            self.opened.set_exception(failed)
        self._shut()

    def _control(self, opcode: int, payload: bytes) -> None:
        if self._sock is None or self._closing:
            return
        if opcode == rfc6455.OP_PING:
            self._write(rfc6455.masked_frame(payload, rfc6455.OP_PONG))
        elif opcode == rfc6455.OP_CLOSE:
            self.close_code = rfc6455.close_code(payload)
            self._write(rfc6455.masked_frame(payload[:2], rfc6455.OP_CLOSE))
            self._close_after_write()

    def _close_after_write(self) -> None:
        """Close once what is pending has been written (as a transport's ``close`` does)."""
        if self._pending:
            self._closing = True
        else:
            self._shut()

    # For the owner

    def send_text(self, text: str) -> None:
        self._write(rfc6455.masked_frame(text.encode()))

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the server's answer (or a drop) resolves :attr:`closed`."""
        if self._sock is None or self._closing:
            return
        if self._upgraded:
            self._write(rfc6455.masked_frame(code.to_bytes(2, "big"), rfc6455.OP_CLOSE))
        else:
            self._shut()

    def abort(self) -> None:
        self._shut()


async def open_stream(
    host: str, port: int, path: str, on_text: OnText, *, deflate: bool = False, timeout: float = 10.0
) -> StreamClient:
    """Connect and complete the WebSocket handshake; raise if either fails within ``timeout``."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:  # not Linux: frames are timed at read
        pass
    client = StreamClient(host, port, path, on_text, deflate=deflate)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
            client.start(sock)
            await client.opened
    except BaseException:
        client.abort()
        sock.close()
        raise
    return client
