"""When the reclaimer runs a full collection (siscom.sessions.reclaim.due) and when it freezes the
open streams (siscom.sessions.reclaim.grown)."""

from __future__ import annotations

from siscom.sessions.reclaim import MIN_ENDED, SHARE, due, grown


def test_a_few_ended_streams_wait_for_more_before_a_full_pass():
    assert not due(MIN_ENDED - 1, 0)
    assert due(MIN_ENDED, 0)


def test_with_many_streams_open_a_pass_waits_for_a_share_of_them_to_have_ended():
    open_streams = 10_000
    needed = int(SHARE * open_streams)
    assert needed > MIN_ENDED
    assert not due(needed - 1, open_streams)
    assert due(needed, open_streams)


def test_open_streams_are_frozen_again_once_they_grow_by_a_share_of_those_frozen():
    assert not grown(MIN_ENDED - 1, 0)
    assert grown(MIN_ENDED, 0)
    frozen_with = 10_000
    assert not grown(frozen_with + int(SHARE * frozen_with) - 1, frozen_with)
    assert grown(frozen_with + int(SHARE * frozen_with), frozen_with)
    assert not grown(frozen_with - 500, frozen_with)  # fewer open: nothing new to freeze
