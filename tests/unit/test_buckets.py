"""Token buckets and what they bound: client messages, pings, handshakes per address."""

from __future__ import annotations

from siscom.core.buckets import TokenBucket
from siscom.security.handshakes import HandshakeLimiter
from siscom.security.inbound import InboundLimits, InboundRates


def test_a_bucket_allows_its_burst_at_once_then_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.1) and not bucket.take(0.1)  # one token back after 1/rate seconds
    assert bucket.full(100.0) and bucket.tokens(100.0) == 5


def test_a_refused_event_costs_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=0.0)
    assert bucket.take(0.0)
    assert not any(bucket.take(0.5) for _ in range(100))
    assert bucket.take(1.0)


def test_messages_and_control_frames_have_separate_allowances_and_zero_means_no_limit() -> None:
    limits = InboundLimits(InboundRates(messages_per_second=1, message_burst=2, pings_per_second=0, ping_burst=1), 0.0)
    assert [limits.message(0.0) for _ in range(3)] == [True, True, False]
    assert all(limits.control_frame(0.0) for _ in range(10_000))


def test_handshakes_are_limited_per_address() -> None:
    limiter = HandshakeLimiter(rate=1, burst=2)
    assert [limiter.allow("10.0.0.1", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("10.0.0.2", 0.0)
    assert limiter.allow("10.0.0.1", 1.0)
    assert limiter.retry_after() == 1


def test_the_handshake_table_stays_bounded_under_many_addresses() -> None:
    limiter = HandshakeLimiter(rate=1, burst=2, max_addresses=100)
    for n in range(1000):
        limiter.allow(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(limiter) <= 100
    for _ in range(3):
        limiter.allow("192.0.2.1", 50.0)
    for n in range(150):
        limiter.allow(f"10.9.{n // 256}.{n % 256}", 60.0)
    assert len(limiter) <= 100
