"""The gateway drains once: the server's stopping signal and the final stop share one 1001 round."""

from __future__ import annotations

import asyncio

import pytest

from siscom.config import Settings
from siscom.core.protocol import CloseCode
from siscom.dev.broker import free_port
from siscom.gateway import Gateway
from siscom.sessions.transport import Transport


class CountingGateway(Gateway):
    """Counts the rounds of closing every session."""

    rounds = 0

    async def close_sessions(self, code: CloseCode, reason: str, timeout: float = 5.0) -> None:
        self.rounds += 1
        await super().close_sessions(code, reason, timeout)


def settings() -> Settings:
    # No broker listens there: the pipeline retries in the background, sessions do not care.
    return Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "KAFKA_TOPIC": "t"})


async def test_the_servers_stopping_signal_drains_once_and_stop_does_not_drain_again():
    gateway = CountingGateway(settings())
    await gateway.start()
    stopping = asyncio.Event()
    gateway.drain_when(stopping.wait)
    gateway.drain_when(lambda: asyncio.sleep(3600))  # only the first signal is watched
    await asyncio.sleep(0.05)
    assert not gateway.draining
    stopping.set()
    async with asyncio.timeout(2):
        while not gateway.draining:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(gateway.stop(), 10)
    assert gateway.rounds == 1


async def test_without_a_signal_stop_drains_once():
    gateway = CountingGateway(settings())
    await gateway.start()
    await asyncio.wait_for(gateway.stop(), 10)
    assert gateway.rounds == 1


async def test_no_session_opens_once_draining():
    gateway = CountingGateway(settings())
    await gateway.start()
    await gateway.drain()
    try:
        with pytest.raises(RuntimeError):
            await gateway.open_session(None, None)  # type: ignore[arg-type]
    finally:
        await asyncio.wait_for(gateway.stop(), 10)


class IdleTransport(Transport):
    """A client that sends nothing and takes whatever is written."""

    peer = "192.0.2.1"

    async def send(self, text: str) -> None:
        pass

    async def receive(self) -> str:
        await asyncio.Event().wait()
        return ""

    async def close(self, code: int, reason: str) -> None:
        pass

    def abort(self) -> None:
        pass


async def test_opening_a_session_never_yields_so_a_disconnect_cannot_land_before_the_route_can_end_it():
    """Quart cancels the route when its client leaves; the cancellation lands at the route's next
    suspension. Were there one inside open_session after the session started, the session would
    run on with nobody to end it (the route ends it only from its own try, after the call)."""
    gateway = Gateway(settings())
    await gateway.start()
    try:
        opening = gateway.open_session(IdleTransport(), frozenset({"bus-1"}))  # type: ignore[arg-type]
        with pytest.raises(StopIteration) as opened:
            opening.send(None)  # runs to its end in one step, or it would suspend here
        session = opened.value.value
        assert session in gateway.sessions()
        session.client_left()
        await asyncio.wait_for(session.finished.wait(), 2)
    finally:
        await asyncio.wait_for(gateway.stop(), 10)
