"""Log filtering: a library's repeated lines are held back and counted, TLS failures never."""

from __future__ import annotations

import logging
import ssl

import pytest

from siscom.logs import RepeatLimiter
from siscom.pipeline.kafka import is_tls_failure, quiet_aiokafka_repeats


def record(message: str, *args: object, name: str = "aiokafka", level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def passed(limiter: RepeatLimiter, *records: logging.LogRecord) -> list[str]:
    return [r.getMessage() for r in records if limiter.filter(r)]


def test_the_same_line_passes_once_per_interval_and_then_says_how_many_were_held_back():
    clock = Clock()
    limiter = RepeatLimiter(60.0, clock=clock)
    refused = 'Unable connect to "%s:%s": %s'
    shown = []
    for _ in range(30):  # every 3 s for 90 s
        shown += passed(limiter, record(refused, "127.0.0.1", 9092, "[Errno 111] Connect call failed"))
        clock.now += 3.0
    text = 'Unable connect to "127.0.0.1:9092": [Errno 111] Connect call failed'
    assert shown == [text, f"{text} (19 more like this in the last 60 s not shown)"]


def test_different_lines_loggers_and_levels_are_limited_apart():
    limiter = RepeatLimiter(60.0, clock=Clock())
    records = [
        record("Unable connect to node with id %s: %s", 1, "refused"),
        record("Unable connect to node with id %s: %s", 2, "refused"),
        record("Unable connect to node with id %s: %s", 1, "refused", name="aiokafka.conn"),
        record("Unable connect to node with id %s: %s", 1, "refused", level=logging.WARNING),
    ]
    assert len(passed(limiter, *records)) == 4
    assert passed(limiter, *records) == []


def test_exempt_lines_always_pass():
    limiter = RepeatLimiter(60.0, clock=Clock(), exempt=lambda r: "CERTIFICATE" in r.getMessage())
    lines = [record("Unable connect: [SSL: CERTIFICATE_VERIFY_FAILED]") for _ in range(5)]
    assert len(passed(limiter, *lines)) == 5


def test_memory_is_bounded_by_the_number_of_distinct_lines_kept():
    limiter = RepeatLimiter(60.0, clock=Clock(), max_messages=10)
    passed(limiter, *(record("line %d", n) for n in range(1000)))
    assert len(limiter._seen) == 10


def test_a_record_whose_format_does_not_fit_its_arguments_does_not_break_the_caller():
    limiter = RepeatLimiter(60.0, clock=Clock())
    assert limiter.filter(record("%d and %d", 1))


def test_tls_failures_are_recognised_by_the_error_they_carry():
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    wrapped = ConnectionError("bootstrap failed")
    wrapped.__cause__ = verify
    assert is_tls_failure(record('Unable connect to "%s:%s": %s', "h", 1, verify))
    assert is_tls_failure(record('Unable connect to "%s:%s": %s', "h", 1, wrapped))
    refused = ConnectionRefusedError(111, "Connect call failed")
    assert not is_tls_failure(record('Unable connect to "%s:%s": %s', "h", 1, refused))
    assert not is_tls_failure(record("Unable to update metadata from %s", [1]))


@pytest.fixture
def aiokafka_filters():
    """Leaves the aiokafka loggers' filters as they were."""
    loggers = [logging.getLogger(n) for n in logging.root.manager.loggerDict if n.split(".")[0] == "aiokafka"]
    before = {logger.name: list(logger.filters) for logger in loggers}
    yield
    for logger in loggers:
        logger.filters[:] = before[logger.name]


def test_every_aiokafka_logger_gets_one_limiter_however_often_it_is_installed(aiokafka_filters):
    quiet_aiokafka_repeats()
    quiet_aiokafka_repeats()
    for name in ("aiokafka", "aiokafka.conn", "aiokafka.consumer.fetcher", "aiokafka.cluster"):
        limiters = [f for f in logging.getLogger(name).filters if isinstance(f, RepeatLimiter)]
        assert len(limiters) == 1, name
