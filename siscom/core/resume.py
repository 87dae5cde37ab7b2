"""Resuming a stream: reading ``cursor`` and ``since``, and deciding where a replay comes from.

Pure: the session's replayer (:mod:`siscom.sessions.replay`) does the waiting and the reading.
"""

from __future__ import annotations

import datetime
import enum
import re
from dataclasses import dataclass

from siscom.core import cursors
from siscom.core.protocol import BadRequest

_MILLISECONDS = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """What a client asked for at connect: a cursor's vector, or a time to replay from."""

    vector: cursors.Vector | None = None
    since_ms: int | None = None


def parse_resume(
    cursor: str | None, since: str | None, *, topics_crc: int, now_ms: int, max_seconds: float
) -> ResumeRequest | None:
    """The query's ``cursor`` or ``since`` (None when neither); :class:`BadRequest` when malformed.

    A cursor for other topics is not malformed: it is well formed and cannot be honoured, which
    the replayer answers with ``recovered: false``; its vector is then empty.
    """
    if cursor is not None and since is not None:
        raise BadRequest("give cursor or since, not both")
    if cursor is not None:
        try:
            crc, vector = cursors.decode(cursor)
        except cursors.CursorError as error:
            raise BadRequest(f"malformed cursor: {error}") from None
        if crc == topics_crc and not any(vector):
            # No stream ever stood nowhere: read as "from the start of every partition", such a
            # cursor would cost a replay of the whole log.
            raise BadRequest("malformed cursor: it names no partition")
        return ResumeRequest(vector=vector if crc == topics_crc else ())
    if since is not None:
        since_ms = parse_time(since)
        oldest = now_ms - int(max_seconds * 1000)
        if since_ms < oldest:
            raise BadRequest(
                f"since is more than {max_seconds:g} s ago (STREAM_REPLAY_MAX_SECONDS)",
                replay_max_seconds=max_seconds,
            )
        return ResumeRequest(since_ms=min(since_ms, now_ms))
    return None


def parse_time(text: str) -> int:
    """RFC 3339 (``2026-12-01T18:00:00Z``, an offset, fractions) or Unix milliseconds, as ms."""
    text = text.strip()
    # ASCII digits only: str.isdigit() also takes "²" (which int() refuses) and "١٢" (which it takes).
    if _MILLISECONDS.fullmatch(text):
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise BadRequest("since must be an RFC 3339 time or Unix milliseconds") from None
    if moment.tzinfo is None or "T" not in text.upper():
        raise BadRequest("since must be an RFC 3339 time with its offset (e.g. Z) or Unix milliseconds")
    return int(moment.timestamp() * 1000)


class Source(enum.Enum):
    WINDOW = "window"  # every record missed is still in the recent-records window
    KAFKA = "kafka"  # read from the log
    AHEAD = "ahead"  # the cursor is past what this process has routed: wait, or the log was replaced
    LOST = "lost"  # cannot be honoured


@dataclass(frozen=True, slots=True)
class Verdict:
    source: Source
    reason: str | None = None


def judge(vector: cursors.Vector, dispatched: cursors.Vector | None, window_covers: bool) -> Verdict:
    """Where the records after ``vector`` can come from, given what this process has routed."""
    if not vector:
        return Verdict(Source.LOST, "the cursor is for other topics")
    if dispatched is None:
        return Verdict(Source.AHEAD)
    if len(vector) != len(dispatched):
        return Verdict(Source.LOST, "the cursor is for other topics")
    for offsets, routed in zip(vector, dispatched):
        if len(offsets) > len(routed):
            return Verdict(Source.LOST, "the cursor names partitions that no longer exist")
        for offset in offsets:
            if offset == cursors.UNKNOWN:
                return Verdict(Source.LOST, "the cursor does not know every partition")
    for offsets, routed in zip(vector, dispatched):
        for offset, reached in zip(offsets, routed):
            if reached == cursors.UNKNOWN or offset > reached:
                return Verdict(Source.AHEAD)
    if window_covers:
        return Verdict(Source.WINDOW)
    return Verdict(Source.KAFKA)
