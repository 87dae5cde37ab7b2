"""The ``siscom`` command: ``serve`` the gateway, keep the last-positions topic (``snapshot-writer``),
``simulate`` a fleet, or run the ``dev`` demo.

Configuration comes from the environment (and ``.env``); a bad value stops the command before
anything starts, with one line naming the variable, its value and what is allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from siscom.config import ConfigError, Settings
from siscom.logs import configure_logging

if TYPE_CHECKING:
    from siscom.gateway import Gateway

logger = logging.getLogger(__name__)

#: Exit status for a configuration error (as for a usage error).
EXIT_CONFIG = 2
#: Exit status when the supervision tree gave up.
EXIT_TREE_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"siscom: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    try:
        return args.command(settings, args)
    except KeyboardInterrupt:
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siscom", description="Kafka-to-WebSocket telemetry gateway")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the gateway with Hypercorn")
    serve.add_argument(
        "--bind", default="127.0.0.1:8000", help="HOST:PORT to listen on, or fd://FD (default %(default)s)"
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="processes serving the port; each reads every partition (default %(default)s)",
    )
    # METRICS_BIND's socket, as the workers' parent hands it down (fd://FD); not for operators.
    serve.add_argument("--metrics-bind", default=None, help=argparse.SUPPRESS)
    serve.set_defaults(command=run_serve)

    simulate = commands.add_parser("simulate", help="produce simulated vehicles to KAFKA_TOPIC")
    simulate.add_argument("--devices", type=int, default=20)
    simulate.add_argument("--rate", type=float, default=20.0, help="records per second, all devices together")
    simulate.add_argument("--duration", type=float, default=None, help="seconds (default: until interrupted)")
    simulate.set_defaults(command=run_simulate)

    writer = commands.add_parser(
        "snapshot-writer", help="keep KAFKA_SNAPSHOT_TOPIC: each device's newest position, for vehicles parked long"
    )
    writer.set_defaults(command=run_snapshot_writer)

    dev = commands.add_parser("dev", help="embedded broker + simulator + server: the local demo")
    dev.add_argument("--bind", default="127.0.0.1:8000")
    dev.add_argument("--devices", type=int, default=25)
    dev.add_argument("--rate", type=float, default=25.0)
    dev.set_defaults(command=run_dev)
    return parser


def hypercorn_config(bind: str, metrics_bind: str | None = None):
    from hypercorn.config import Config

    config = Config()
    # With METRICS_BIND, a second listener; the routes tell them apart (siscom.web.prometheus).
    config.bind = [bind] if metrics_bind is None else [bind, metrics_bind]
    config.accesslog = None
    config.graceful_timeout = 5.0
    # Clients send only small subscription requests; anything larger is refused with 1009.
    config.websocket_max_message_size = 64 * 1024
    # Tell clients nothing about the server software.
    config.include_server_header = False
    return config


async def serve_app(
    settings: Settings,
    bind: str,
    stop: asyncio.Event,
    metrics_bind: str | None = None,
    gateway: Gateway | None = None,
) -> int:
    """Serve until ``stop`` is set or the supervision tree fails (the app drains the gateway,
    closing clients with 1001, when Hypercorn starts shutting down).

    ``gateway`` is built from ``settings`` unless given (the chaos tests give one with faulty actors).
    """
    from hypercorn.asyncio import serve

    from siscom.app import create_app, gateway_of

    app = create_app(settings, gateway)
    gateway = gateway_of(app)
    exit_code = 0

    async def shutdown_trigger() -> None:
        nonlocal exit_code
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(gateway.failed.wait())}
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        if gateway.failed.is_set():
            exit_code = EXIT_TREE_FAILED

    metrics_bind = metrics_bind or settings.metrics_bind
    await serve(app, hypercorn_config(bind, metrics_bind), shutdown_trigger=shutdown_trigger)
    return exit_code


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


#: Net allocations between two young collections (Python's default: 700); see settle_collector.
GC_YOUNG_THRESHOLD = 20_000


def settle_collector() -> None:
    """Keep the cyclic garbage collector's full passes rare and short in a serving process.

    A full pass walks every tracked object with the event loop stopped: with 1,000 connections
    about 300,000 objects, hundreds of ms on the reference machine, which delays every frame
    waiting by as much (the benchmark's GC rows). Python starts one whenever the objects
    promoted to the oldest generation since the last reach a quarter of those it holds; at the
    default young threshold a young collection runs every few ms, so whatever a batch has in
    flight for longer than that (records, deliveries, futures) is promoted, and full passes came
    every few seconds under load. Young collections every 20,000 allocations let in-flight
    objects die young (a young pass over 20,000 objects takes about a millisecond), and the
    objects of the start-up (modules, classes, the app), which live as long as the process, are
    frozen out of every pass (``gc.freeze``; they are still freed normally).
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def run_serve(settings: Settings, args: argparse.Namespace) -> int:
    if settings.metrics_port is not None and args.bind.rpartition(":")[2] == str(settings.metrics_port):
        print(
            f"siscom: configuration error: METRICS_BIND={settings.metrics_bind!r} is not valid: "
            f"a port other than the one of --bind {args.bind}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.workers > 1:
        from siscom.workers import run_workers

        return run_workers(args.bind, args.workers, settings.metrics_bind)

    async def main() -> int:
        import hypercorn.asyncio  # noqa: F401  (imported before the collector freezes what exists)

        import siscom.app  # noqa: F401

        settle_collector()
        stop = asyncio.Event()
        _stop_on_signals(stop)
        return await serve_app(settings, args.bind, stop, args.metrics_bind)

    return asyncio.run(main())


def run_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from siscom.dev.simulator import run_simulator

    async def main() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await run_simulator(
            ",".join(settings.kafka_bootstrap_servers),
            settings.kafka_topic,
            devices=args.devices,
            rate=args.rate,
            duration=args.duration,
            alerts_topic=settings.kafka_alerts_topic,
            alert_every=50 if settings.kafka_alerts_topic else 0,
            stop=stop,
        )
        return 0

    return asyncio.run(main())


def run_snapshot_writer(settings: Settings, args: argparse.Namespace) -> int:
    if settings.kafka_snapshot_topic is None:
        print(
            "siscom: configuration error: KAFKA_SNAPSHOT_TOPIC='' is not valid: required by snapshot-writer "
            "(the topic it keeps)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    from siscom.writer import run_snapshot_writer as run

    async def main() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        return await run(settings, stop)

    return asyncio.run(main())


def run_dev(settings: Settings, args: argparse.Namespace) -> int:
    from siscom.dev.broker import TansuBroker, create_topics
    from siscom.dev.simulator import run_simulator

    alerts_topic = settings.kafka_alerts_topic or "tracking-alerts"
    with TansuBroker() as broker:
        settings = settings.replace(
            kafka_bootstrap_servers=(broker.bootstrap,),
            kafka_alerts_topic=alerts_topic,
            kafka_auto_offset_reset="latest",
            kafka_fetch_max_wait_ms=min(settings.kafka_fetch_max_wait_ms, 20),
        )

        async def main() -> int:
            stop = asyncio.Event()
            _stop_on_signals(stop)
            await create_topics(broker.bootstrap, {settings.kafka_topic: 3, alerts_topic: 1})
            simulator = asyncio.create_task(
                run_simulator(
                    broker.bootstrap,
                    settings.kafka_topic,
                    devices=args.devices,
                    rate=args.rate,
                    duration=None,
                    alerts_topic=alerts_topic,
                    alert_every=40,
                    stop=stop,
                )
            )
            host, _, port = args.bind.rpartition(":")
            print(f"siscom dev: broker at {broker.bootstrap}; open http://{host}:{port}/", flush=True)
            try:
                return await serve_app(settings, args.bind, stop)
            finally:
                stop.set()
                simulator.cancel()
                await asyncio.wait((simulator,))

        return asyncio.run(main())
