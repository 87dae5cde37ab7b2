"""What a supervisor knows about a child, as plain data."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .actor import Actor

__all__ = ["ChildInfo", "ChildSpec", "Restart", "RestartIntensityExceeded", "Strategy"]


class Restart(enum.Enum):
    """When a child that ended is started again."""

    PERMANENT = "permanent"  #: always, whether it returned or crashed
    TRANSIENT = "transient"  #: only after a crash; a normal return is final
    TEMPORARY = "temporary"  #: never; the supervisor forgets it as soon as it stops


class Strategy(enum.Enum):
    """Which children a supervisor restarts when one of them must be restarted."""

    ONE_FOR_ONE = "one_for_one"  #: only that child
    ONE_FOR_ALL = "one_for_all"  #: every child, the others stopped first
    REST_FOR_ONE = "rest_for_one"  #: that child and the children started after it


@dataclass(frozen=True, slots=True)  # a session supervisor holds one per session
class ChildSpec:
    """How to start a child and what to do when it ends.

    ``start`` is called on every start and restart, so each life of the child begins from a fresh
    actor. ``shutdown`` is how many seconds the supervisor waits for the child after cancelling it
    (``math.inf`` waits as long as it takes, which suits a child that is itself a supervisor).
    """

    id: str
    start: Callable[[], Actor]
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0

    def __post_init__(self) -> None:
        if not self.shutdown > 0:  # also refuses NaN
            raise ValueError(f"child {self.id!r}: shutdown must be positive, got {self.shutdown}")


@dataclass(frozen=True)
class ChildInfo:
    """A snapshot of one child, as :meth:`Supervisor.which_children` reports it."""

    id: str
    actor: Actor | None
    running: bool
    restarts: int


class RestartIntensityExceeded(Exception):
    """A supervisor restarted more than ``intensity`` children within ``period`` seconds.

    It has stopped all its children and gives up; to its own supervisor this is a crash.
    """

    def __init__(self, supervisor: str, intensity: int, period: float) -> None:
        super().__init__(f"supervisor {supervisor!r}: more than {intensity} restarts within {period:g}s")
        self.supervisor = supervisor
        self.intensity = intensity
        self.period = period
