"""When the reclaimer runs a full collection (siscom.sessions.reclaim.due)."""

from __future__ import annotations

from siscom.sessions.reclaim import MIN_ENDED, SHARE, due


def test_a_few_ended_streams_wait_for_more_before_a_full_pass():
    assert not due(MIN_ENDED - 1, 0)
    assert due(MIN_ENDED, 0)


def test_with_many_streams_open_a_pass_waits_for_a_share_of_them_to_have_ended():
    open_streams = 10_000
    needed = int(SHARE * open_streams)
    assert needed > MIN_ENDED
    assert not due(needed - 1, open_streams)
    assert due(needed, open_streams)
