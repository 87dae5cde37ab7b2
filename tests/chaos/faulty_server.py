"""``siscom serve`` with a faulty gateway (one fault of :mod:`chaos.faults`): for the chaos tests only.

    SISCOM_CHAOS_FAULT=consumer-crash python -m chaos.faulty_server --bind 127.0.0.1:8000

It serves through the product's own ``serve_app``, so the shutdown and the exit status are the
product's; only the gateway's actor factories differ. The product has no such hook: ``siscom
serve`` never reads this variable nor imports this module. The tests directory must be on
``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from chaos.faults import actors

from siscom.cli import serve_app
from siscom.config import Settings
from siscom.gateway import Gateway
from siscom.logs import configure_logging


async def serve(settings: Settings, bind: str, fault: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return await serve_app(settings, bind, stop, gateway=Gateway(settings, **actors(fault)))


def main() -> int:
    parser = argparse.ArgumentParser(prog="chaos.faulty_server")
    parser.add_argument("--bind", required=True)
    args = parser.parse_args()
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(serve(settings, args.bind, os.environ["SISCOM_CHAOS_FAULT"]))


if __name__ == "__main__":
    sys.exit(main())
