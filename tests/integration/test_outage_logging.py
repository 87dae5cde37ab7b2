"""While the broker is away, the log says so once per attempt, in our words, not aiokafka's too.

aiokafka logs each failed connection at ERROR (``Unable connect to ...``), which during an outage
of hours fills the log. Our consumer's own line per attempt stays (it carries the attempt number
and the next delay); aiokafka's repeats are held back. Nothing listens on the port used here, so
each attempt is a real connection refused on the loopback interface.
"""

from __future__ import annotations

import asyncio
import logging
import time

from siscom.config import Settings
from siscom.dev.broker import free_port
from siscom.metrics import Metrics
from siscom.pipeline.consumer import Consumer, KafkaStatus
from supervisors import Mailbox

ATTEMPTS = 10
#: Ten attempts take about 3 s at the 0.3 s backoff cap used here.
OUTAGE_LIMIT_SECONDS = 20.0


def attempts_logged(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name == "siscom.pipeline.consumer" and "Cannot connect" in r.getMessage()]


async def test_an_absent_broker_fills_the_log_with_our_attempts_but_not_with_aiokafkas_repeats(caplog):
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "KAFKA_RECONNECT_BACKOFF_MAX_SECONDS": "0.3"},
        env_file=None,
    )
    status = KafkaStatus()
    consumer = Consumer(settings, Mailbox(), status, Metrics())
    with caplog.at_level(logging.INFO):
        running = asyncio.create_task(consumer.run())
        # The outage lasts until the consumer has tried ATTEMPTS times: had aiokafka's line not
        # been held back, it would stand there as often.
        began = time.monotonic()
        while len(attempts_logged(caplog.records)) < ATTEMPTS and time.monotonic() - began < OUTAGE_LIMIT_SECONDS:
            await asyncio.sleep(0.05)
        outage = time.monotonic() - began
        running.cancel()
        await asyncio.wait((running,))

    ours = attempts_logged(caplog.records)
    theirs = [r for r in caplog.records if r.name.split(".")[0] == "aiokafka"]
    print(f"in {outage:.1f} s: {len(ours)} attempts logged by the consumer, {len(theirs)} aiokafka lines")
    assert not status.connected
    assert len(ours) >= ATTEMPTS, "the consumer did not keep trying"
    # One line per distinct message (here: the refused bootstrap), not one per attempt.
    assert 1 <= len(theirs) <= 2, [r.getMessage() for r in theirs]
