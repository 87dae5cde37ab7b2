"""A supervisor: an actor whose work is starting, watching and restarting other actors."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from time import monotonic

import tenacity.wait

from .actor import Actor
from .backoff import RestartBackoff, default_backoff
from .mailbox import Mailbox
from .spec import ChildInfo, ChildSpec, Restart, RestartIntensityExceeded, Strategy

__all__ = ["Supervisor"]

logger = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Child:
    """The supervisor's record of one child, across all its lives."""

    spec: ChildSpec
    dynamic: bool  # added by start_child rather than given to the constructor
    actor: Actor | None = None
    task: asyncio.Task[None] | None = None  # None whenever the supervisor counts it as not running
    starts: int = 0
    pending: _RestartDue | None = None  # set while it waits out the backoff before a restart
    recent_restarts: deque[float] | None = None  # created on its first restart: most never have one

    @property
    def dynamic_temporary(self) -> bool:
        """Started on demand and never restarted: a session, of which there may be thousands."""
        return self.dynamic and self.spec.restart is Restart.TEMPORARY


@dataclass(eq=False, slots=True)
class _Exited:
    """A child ended by itself (``task`` is None when its factory failed on a restart)."""

    child: _Child
    task: asyncio.Task[None] | None
    error: BaseException | None  # None for a normal return


@dataclass(eq=False, slots=True)
class _RestartDue:
    """The backoff is over: start these children again, in this (start) order."""

    children: list[_Child]
    timer: asyncio.TimerHandle | None = None


def _count_recent(times: deque[float], now: float, period: float) -> int:
    """Add ``now`` to ``times`` and return how many of them fall within the last ``period``."""
    times.append(now)
    while now - times[0] >= period:
        times.popleft()
    return len(times)


class Supervisor(Actor):
    """Starts children from their specs, in order, and restarts them as the specs and strategy say.

    Each child runs ``actor.run()`` in a task of its own, named ``"<supervisor>/<child id>"``.
    When a child ends by itself (it returned, raised, or was cancelled by someone other than this
    supervisor, which counts as a crash), the supervisor logs it (a crash with its traceback, on
    logger ``supervisors.supervisor``) and decides by the child's :class:`Restart` type:

    - ``PERMANENT`` is restarted after any end, ``TRANSIENT`` only after a crash, ``TEMPORARY``
      never; a temporary child is forgotten as soon as it stops, for whatever reason.
    - A restart applies the :class:`Strategy`: ``ONE_FOR_ONE`` restarts the child alone;
      ``ONE_FOR_ALL`` stops all the other children (last started first) and starts them all again
      in order; ``REST_FOR_ONE`` does the same with the children started after the one that ended.
      Temporary siblings stopped this way are forgotten, not restarted. Children added with
      :meth:`start_child` come last in the start order.
    - Before a restart the supervisor waits ``backoff``, a tenacity wait strategy, asked with the
      number of restarts of that child within the last ``period`` seconds as its attempt number (so
      a child that has been calm for a while starts again at attempt 1). It keeps supervising the
      other children, serving :meth:`start_child` and :meth:`terminate_child`, and can be stopped
      while it waits.
    - A restart is one more within the sliding window of ``period`` seconds, read on ``clock``
      (``time.monotonic`` unless given; tests pass a clock they move by hand); more than
      ``intensity`` of them means restarting does not help. The supervisor then stops all its
      children and :meth:`run` raises :class:`RestartIntensityExceeded`, which its own supervisor
      sees as a crash: the failure escalates up the tree.

    Stopping a child means cancelling its task and waiting up to ``spec.shutdown`` seconds; a child
    still running after that is warned about, cancelled again, and still awaited, so no task is
    left behind. The supervisor stops its children in reverse start order, except that dynamic
    temporary children (sessions, possibly thousands) are stopped first and all at once. Give a
    child that is itself a supervisor enough shutdown time for its own children (``math.inf`` is
    allowed); OTP does the same.

    The child table is changed only between awaits, so :meth:`start_child` and
    :meth:`terminate_child`, called from other tasks, never see it half-updated; :meth:`start_child`
    costs the same with ten children or ten thousand.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 3,
        period: float = 5.0,
        backoff: tenacity.wait.wait_base | None = None,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        super().__init__(name)
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"supervisor {name!r}: child ids must be unique, got {ids}")
        if intensity < 0:
            raise ValueError(f"supervisor {name!r}: intensity must be 0 or more")
        if not period > 0:
            raise ValueError(f"supervisor {name!r}: period must be positive")
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self._specs = tuple(children)
        self._backoff = RestartBackoff(backoff if backoff is not None else default_backoff())
        self._clock = clock
        self._children: dict[str, _Child] = {}  # in start order
        self._live = 0  # children with a task, kept so that count_children() costs nothing
        self._stopping: set[asyncio.Task[None]] = set()  # cancelled by us, not yet ended
        self._due: set[_RestartDue] = set()  # restarts waiting out their backoff
        self._restart_times: deque[float] = deque()
        self._restarts = 0
        self._events: Mailbox[_Exited | _RestartDue] = Mailbox()
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None

    # Life

    async def run(self) -> None:
        """Start the children in order, then supervise them until cancelled or escalating.

        On cancellation, stops the children (last started first) and re-raises CancelledError.
        Past the restart intensity, stops the children and raises RestartIntensityExceeded. If an
        initial child cannot be started, stops those already started and raises that error.
        """
        if self._running:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._events = Mailbox()
        self._children = {}
        self._restart_times.clear()
        self._restarts = 0
        self._running = True
        try:
            for spec in self._specs:
                child = _Child(spec, dynamic=False)
                self._children[spec.id] = child
                self._spawn(child)
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            while True:
                # No local name for the event: this frame would keep it, and with it the last
                # exited child (its actor, task and error), until the next event arrives.
                await self._on_event(await self._events.get())
        finally:
            self._running = False
            await self._stop_all()

    @property
    def running(self) -> bool:
        """True while :meth:`run` supervises: started, and not yet stopping or escalating."""
        return self._running

    @property
    def restarts(self) -> int:
        """Restarts done in this run, a group restart counting as one (as for the intensity)."""
        return self._restarts

    # Top-level lifecycle: a supervisor without a parent is driven by these three.

    async def start(self) -> None:
        """Run this supervisor in a task of its own; return once its initial children started.

        Raises what :meth:`run` raised if it ended before that, e.g. a child factory's error.
        """
        if self._task is not None and not self._task.done():
            raise RuntimeError(f"supervisor {self.name!r} is already started")
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self.run(), name=self.name)
        await asyncio.wait((self._ready, self._task), return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()

    async def stop(self) -> None:
        """Cancel :meth:`run` and wait until it has stopped every child; idempotent.

        An escalation that ended the run earlier is not raised here; :meth:`wait` raises it.
        """
        task = self._task
        if task is None:
            return
        task.cancel()
        await asyncio.wait((task,))

    async def wait(self) -> None:
        """Wait for :meth:`run` to end; raise what ended it, unless it was a cancellation."""
        if self._task is None:
            raise RuntimeError(f"supervisor {self.name!r} was not started")
        await asyncio.wait((self._task,))
        if not self._task.cancelled() and (error := self._task.exception()) is not None:
            raise error

    # Dynamic children

    async def start_child(self, spec: ChildSpec) -> Actor:
        """Start a child on this running supervisor, last in start order; return its actor.

        Raises RuntimeError if the supervisor is not running, ValueError if the id is taken, and
        whatever ``spec.start`` raises (the child is then not added).
        """
        if not self._running:
            raise RuntimeError(f"supervisor {self.name!r} is not running")
        if spec.id in self._children:
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.id!r}")
        child = _Child(spec, dynamic=True)
        actor = self._spawn(child)
        self._children[spec.id] = child
        return actor

    async def terminate_child(self, id: str) -> None:
        """Stop the child ``id`` and forget it; it is not restarted.

        An unknown id is not an error: a temporary child may have ended and been forgotten a
        moment before.
        """
        child = self._children.pop(id, None)
        if child is not None:
            await self._halt([child])

    # Inspection

    def which_children(self) -> list[ChildInfo]:
        """Every child this supervisor knows, in start order."""
        return [
            ChildInfo(child.spec.id, child.actor, child.task is not None, max(child.starts - 1, 0))
            for child in self._children.values()
        ]

    def count_children(self) -> int:
        """How many children are running."""
        return self._live

    # Starting and noticing ends

    def _spawn(self, child: _Child) -> Actor:
        """Start a fresh actor for ``child`` in a task of its own."""
        actor = child.spec.start()
        task = asyncio.create_task(actor.run(), name=f"{self.name}/{child.spec.id}")
        task.add_done_callback(partial(self._on_task_done, child))
        child.actor, child.task = actor, task
        child.starts += 1
        self._live += 1
        return actor

    def _detach(self, child: _Child) -> asyncio.Task[None] | None:
        """Count ``child`` as not running from now on; return the task it had."""
        task, child.task = child.task, None
        if task is not None:
            self._live -= 1
        return task

    def _on_task_done(self, child: _Child, task: asyncio.Task[None]) -> None:
        # Called for every child task. Reading the outcome here also marks it as retrieved.
        self._stopping.discard(task)
        error = asyncio.CancelledError() if task.cancelled() else task.exception()
        if child.task is task:  # it ended by itself: news for run()
            self._report(child, error)
            self._events.put_nowait(_Exited(child, task, error))
        elif error is not None and not isinstance(error, asyncio.CancelledError):
            logger.error(
                "supervisor %r: child %r failed while stopping",
                self.name,
                child.spec.id,
                exc_info=error,
            )

    def _report(self, child: _Child, error: BaseException | None) -> None:
        if error is None:
            logger.debug("supervisor %r: child %r exited normally", self.name, child.spec.id)
        elif isinstance(error, asyncio.CancelledError):
            logger.error(
                "supervisor %r: child %r was cancelled, not by its supervisor: counted as a crash",
                self.name,
                child.spec.id,
            )
        else:
            logger.error("supervisor %r: child %r crashed", self.name, child.spec.id, exc_info=error)

    # Restarting

    async def _on_event(self, event: _Exited | _RestartDue) -> None:
        if isinstance(event, _Exited):
            await self._on_exit(event)
        else:
            self._on_restart_due(event)

    async def _on_exit(self, event: _Exited) -> None:
        child = event.child
        if (
            self._children.get(child.spec.id) is not child  # terminated and forgotten meanwhile
            or child.task is not event.task  # stopped or restarted as part of a group meanwhile
            or child.pending is not None  # already waiting for a group restart
        ):
            return
        self._detach(child)
        restart, crashed = child.spec.restart, event.error is not None
        if restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and crashed):
            await self._restart(child, event.error)
        elif restart is Restart.TEMPORARY:
            del self._children[child.spec.id]

    async def _restart(self, child: _Child, error: BaseException | None) -> None:
        now = self._clock()
        if _count_recent(self._restart_times, now, self.period) > self.intensity:
            logger.error(
                "supervisor %r: more than %d restarts within %gs; stopping its children and giving up",
                self.name,
                self.intensity,
                self.period,
            )
            raise RestartIntensityExceeded(self.name, self.intensity, self.period) from error
        self._restarts += 1
        group = self._group_of(child)
        await self._stop_in_reverse([other for other in group if other is not child])
        group = [member for member in group if self._children.get(member.spec.id) is member]
        if child.recent_restarts is None:
            child.recent_restarts = deque()
        attempt = _count_recent(child.recent_restarts, now, self.period)
        delay = self._backoff.delay(attempt, error)
        due = _RestartDue(group)
        for member in group:
            member.pending = due
        due.timer = asyncio.get_running_loop().call_later(delay, self._events.put_nowait, due)
        self._due.add(due)

    def _group_of(self, child: _Child) -> list[_Child]:
        """The children the strategy restarts along with ``child``, in start order."""
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        children = list(self._children.values())
        if self.strategy is Strategy.ONE_FOR_ALL:
            return children
        return children[children.index(child) :]

    def _on_restart_due(self, due: _RestartDue) -> None:
        self._due.discard(due)
        for child in due.children:
            # Skip children terminated meanwhile or taken over by a later group restart.
            if child.pending is due and self._children.get(child.spec.id) is child:
                child.pending = None
                try:
                    self._spawn(child)
                except Exception as error:  # a child that cannot even start has crashed
                    self._report(child, error)
                    self._events.put_nowait(_Exited(child, None, error))

    # Stopping

    async def _stop_all(self) -> None:
        for due in self._due:
            if due.timer is not None:
                due.timer.cancel()
        self._due.clear()
        await self._stop_in_reverse(list(self._children.values()))
        if self._stopping:  # cancelled by a stop that was itself interrupted
            await asyncio.wait(set(self._stopping))

    async def _stop_in_reverse(self, children: list[_Child]) -> None:
        """Stop ``children`` (given in start order), last started first; forget temporary ones.

        Dynamic temporary children go first and all at once, as OTP stops the children of a
        simple_one_for_one supervisor; the others one at a time.
        """
        await self._halt([child for child in children if child.dynamic_temporary])
        for child in reversed(children):
            if not child.dynamic_temporary:
                await self._halt([child])
        for child in children:
            forgotten = child.spec.restart is Restart.TEMPORARY
            if forgotten and self._children.get(child.spec.id) is child:
                del self._children[child.spec.id]

    async def _halt(self, children: list[_Child]) -> None:
        """Cancel ``children`` together and wait until every one of them has ended.

        They get the longest shutdown time among them; any still running after that is warned
        about and cancelled again (where OTP would kill it), then awaited for as long as it takes.
        """
        tasks: dict[asyncio.Task[None], _Child] = {}
        for child in children:
            child.pending = None
            task = self._detach(child)
            if task is not None:
                task.cancel()
                tasks[task] = child
        if not tasks:
            return
        self._stopping.update(task for task in tasks if not task.done())
        shutdown = max(child.spec.shutdown for child in tasks.values())
        _, late = await asyncio.wait(tasks, timeout=None if math.isinf(shutdown) else shutdown)
        for task in late:
            logger.warning(
                "supervisor %r: child %r still running %gs after being cancelled; cancelling again",
                self.name,
                tasks[task].spec.id,
                shutdown,
            )
            task.cancel()
        if late:
            await asyncio.wait(late)
