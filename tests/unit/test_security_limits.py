"""Connection limits: a total and a per-address cap, 0 meaning none, slots freed on release."""

from __future__ import annotations

from siscom.security.limits import ConnectionLimiter


def test_the_total_cap_refuses_past_it_and_frees_slots_on_release():
    limiter = ConnectionLimiter(max_total=2, max_per_address=0)
    assert limiter.acquire("10.0.0.1") is None
    assert limiter.acquire("10.0.0.2") is None
    assert limiter.acquire("10.0.0.3") == "server at its connection limit"
    assert limiter.total == 2
    limiter.release("10.0.0.1")
    assert limiter.acquire("10.0.0.3") is None


def test_the_per_address_cap_counts_each_address_apart():
    limiter = ConnectionLimiter(max_total=0, max_per_address=2)
    assert limiter.acquire("10.0.0.1") is None
    assert limiter.acquire("10.0.0.1") is None
    assert limiter.acquire("10.0.0.1") == "too many connections from this address"
    assert limiter.acquire("10.0.0.2") is None
    assert limiter.count("10.0.0.1") == 2 and limiter.total == 3
    limiter.release("10.0.0.1")
    assert limiter.acquire("10.0.0.1") is None


def test_a_refused_connection_takes_no_slot():
    limiter = ConnectionLimiter(max_total=1, max_per_address=1)
    assert limiter.acquire("a") is None
    for _ in range(5):
        assert limiter.acquire("a") is not None
        assert limiter.acquire("b") is not None
    limiter.release("a")
    assert limiter.total == 0 and limiter.count("a") == 0 and limiter.count("b") == 0


def test_zero_means_no_limit():
    limiter = ConnectionLimiter(max_total=0, max_per_address=0)
    assert all(limiter.acquire("a") is None for _ in range(10_000))
