"""Faults the chaos tests inject into the gateway: actors that crash on purpose.

Nothing in the product imports this module. A fault is a set of actor factories handed to the
:class:`~siscom.gateway.Gateway` in place of its defaults (``Gateway(settings, **actors(name))``):
subclasses of the real actors that crash when told to, so nothing is patched. In-process tests
build their gateway so; a server process gets one by being started as
``python -m chaos.faulty_server`` with ``SISCOM_CHAOS_FAULT`` naming it (see that module). Each
fault raises :class:`InjectedFault`, so a test can tell it from a real crash in the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import ConsumerRecord

from siscom.core.deliveries import Delivery, Progress
from siscom.pipeline.consumer import Consumer
from siscom.pipeline.decoder import Decoder
from siscom.pipeline.router import Router

#: A record whose value contains this crashes the decoder (with the "decoder-poison" fault).
DECODER_POISON = "POISON-DECODER"
#: A record whose value contains this crashes the router (with the "router-poison" fault).
ROUTER_POISON = "POISON-ROUTER"


class InjectedFault(RuntimeError):
    """A crash a test asked for."""


class PoisonedDecoder(Decoder):
    """Crashes on each batch holding a record with DECODER_POISON in its value."""

    async def receive(self, records: Sequence[ConsumerRecord]) -> None:
        if any(record.value and DECODER_POISON.encode() in record.value for record in records):
            raise InjectedFault("the decoder met a poison record")
        await super().receive(records)


class PoisonedRouter(Router):
    """Crashes on each batch holding a delivery with ROUTER_POISON in its text."""

    async def receive(self, deliveries: list[Delivery] | Progress) -> None:
        if not isinstance(deliveries, Progress) and any(ROUTER_POISON in delivery.text for delivery in deliveries):
            raise InjectedFault("the router met a poison frame")
        await super().receive(deliveries)


class CrashingConsumer(Consumer):
    """Crashes as soon as it starts, every time: restarting cannot help."""

    async def run(self) -> None:
        raise InjectedFault("the consumer crashes as it starts")


class CrashOnDemandConsumer(Consumer):
    """A working consumer that crashes when its :meth:`crash` is called (its restart is fresh)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._crash = asyncio.Event()

    def crash(self) -> None:
        self._crash.set()

    async def run(self) -> None:
        reading = asyncio.ensure_future(super().run())
        told = asyncio.ensure_future(self._crash.wait())
        done, _ = await asyncio.wait({reading, told}, return_when=asyncio.FIRST_COMPLETED)
        if told in done:
            reading.cancel()
            await asyncio.wait({reading})
            raise InjectedFault("the consumer was told to crash")
        told.cancel()
        reading.result()


#: Each fault: the Gateway keyword arguments that install it.
FAULTS: dict[str, dict[str, type]] = {
    "decoder-poison": {"decoder": PoisonedDecoder},
    "router-poison": {"router": PoisonedRouter},
    "consumer-crash": {"consumer": CrashingConsumer},
    "consumer-crash-on-demand": {"consumer": CrashOnDemandConsumer},
}


def actors(name: str) -> dict[str, type]:
    """The actor factories of the fault called ``name`` (a key of FAULTS), for ``Gateway(...)``."""
    try:
        return dict(FAULTS[name])
    except KeyError:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}") from None
