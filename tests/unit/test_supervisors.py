"""Actors and supervisors: start order, restarts by type and strategy, intensity and escalation,
backoff, dynamic children and orderly shutdown.

The children are tiny fakes that return or crash when the test says so; every supervisor gets a
zero backoff unless the backoff itself is under test, and nothing waits on the wall clock. Every
await that a broken supervisor could leave hanging has a short deadline of its own (``within``), so
such a test fails in seconds, saying what it waited for.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import tenacity
import tenacity.wait
from unit.deadlines import within

from supervisors import (
    Actor,
    ChildSpec,
    Mailbox,
    Restart,
    RestartIntensityExceeded,
    Strategy,
    Supervisor,
)
from supervisors.backoff import RestartBackoff, default_backoff

NO_WAIT = tenacity.wait_none()
LOGGER = "supervisors.supervisor"


class Boom(Exception):
    """The crash tests cause on purpose."""


class Worker(Actor):
    """Runs until the test makes it return or crash; notes its starts and stops in a shared log."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__(name)
        self.log = log
        self.task: asyncio.Task[Any] | None = None
        self._fate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        self.task = asyncio.current_task()
        self.log.append(f"start {self.name}")
        try:
            await self._fate
        except asyncio.CancelledError:
            self.log.append(f"stop {self.name}")
            raise

    def exit(self) -> None:
        self._fate.set_result(None)

    def crash(self, error: BaseException | None = None) -> None:
        self._fate.set_exception(error or Boom(f"{self.name} crashed on purpose"))


class Lab:
    """Makes child specs for workers and remembers every worker made, per child id."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.made: defaultdict[str, list[Worker]] = defaultdict(list)

    def spec(self, id: str, restart: Restart = Restart.PERMANENT, shutdown: float = 1.0) -> ChildSpec:
        def start() -> Worker:
            worker = Worker(id, self.log)
            self.made[id].append(worker)
            return worker

        return ChildSpec(id, start, restart, shutdown)

    def current(self, id: str) -> Worker:
        return self.made[id][-1]

    def starts(self, id: str) -> int:
        return len(self.made[id])

    def running(self, *ids: str) -> Callable[[], bool]:
        """A condition: the newest worker of each id has begun to run."""
        return lambda: all(self.made[id] and self.current(id).task for id in ids)


async def eventually(condition: Callable[[], object], turns: int = 1000) -> None:
    """Let the event loop run until ``condition()`` holds; fail after a bounded number of turns."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def settle(turns: int = 50) -> None:
    """Give the loop time for anything already set in motion (with zero backoff) to happen."""
    for _ in range(turns):
        await asyncio.sleep(0)


Start = Callable[[Supervisor], Awaitable[Supervisor]]


@pytest.fixture
async def lab() -> Lab:
    return Lab()


@pytest.fixture
async def started() -> AsyncIterator[Start]:
    """Starts supervisors for a test and stops every one of them afterwards."""
    running: list[Supervisor] = []

    async def start(supervisor: Supervisor) -> Supervisor:
        running.append(supervisor)
        await within(supervisor.start(), "the supervisor to start its children")
        return supervisor

    yield start
    for supervisor in reversed(running):
        await within(supervisor.stop(), "the supervisor to stop its children")


async def one_child(lab: Lab, started: Start, restart: Restart = Restart.PERMANENT) -> Supervisor:
    """A root supervisor (no backoff) over one child ``a`` of the lab, started and running."""
    root = await started(Supervisor("root", [lab.spec("a", restart)], backoff=NO_WAIT))
    await eventually(lab.running("a"))
    return root


# Actors


async def test_actor_is_named_after_its_class_unless_told() -> None:
    class Courier(Actor):
        pass

    assert Courier().name == "Courier"
    assert Courier(name="north").name == "north"


async def test_default_run_hands_inbox_messages_to_receive_in_order() -> None:
    received: list[str] = []

    class Collector(Actor):
        async def receive(self, message: str) -> None:
            received.append(message)

    collector = Collector(inbox=Mailbox())
    for message in ("a", "b", "c"):
        collector.inbox.put_nowait(message)
    task = asyncio.create_task(collector.run())
    await eventually(lambda: len(received) == 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(task, "the supervisor's run to end")

    assert received == ["a", "b", "c"]


async def test_actor_that_does_not_override_receive_crashes_on_its_first_message() -> None:
    actor = Actor(inbox=Mailbox())
    actor.inbox.put_nowait("anything")

    with pytest.raises(NotImplementedError):
        await actor.run()


async def test_default_run_without_an_inbox_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no inbox"):
        await Actor("lonely").run()


# Specs


def test_child_spec_needs_a_positive_shutdown_time() -> None:
    for shutdown in (0, -1, math.nan):
        with pytest.raises(ValueError):
            ChildSpec("a", Actor, shutdown=shutdown)
    assert ChildSpec("a", Actor, shutdown=math.inf).shutdown == math.inf


def test_supervisor_refuses_duplicate_child_ids(lab: Lab) -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor("root", [lab.spec("a"), lab.spec("a")])


# Starting and stopping


async def test_children_start_in_order_and_stop_in_reverse_order(lab: Lab) -> None:
    root = Supervisor("root", [lab.spec(id) for id in "abc"], backoff=NO_WAIT)
    await within(root.start(), "the supervisor to start its children")
    await eventually(lab.running("a", "b", "c"))

    await within(root.stop(), "the supervisor to stop its children")

    assert lab.log == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert not root.running
    assert root.count_children() == 0


async def test_start_returns_once_the_initial_children_are_started(lab: Lab, started: Start) -> None:
    root = await started(Supervisor("root", [lab.spec(id) for id in "ab"], backoff=NO_WAIT))

    assert root.running
    assert root.count_children() == 2
    assert [(info.id, info.running, info.restarts) for info in root.which_children()] == [
        ("a", True, 0),
        ("b", True, 0),
    ]
    assert [info.actor for info in root.which_children()] == [lab.current("a"), lab.current("b")]


async def test_child_task_is_named_after_supervisor_and_child(lab: Lab, started: Start) -> None:
    await one_child(lab, started)

    assert lab.current("a").task.get_name() == "root/a"


async def test_stop_leaves_no_task_behind(lab: Lab) -> None:
    before = asyncio.all_tasks()
    inner = ChildSpec(
        "inner",
        lambda: Supervisor("inner", [lab.spec("x"), lab.spec("y")], backoff=NO_WAIT),
        shutdown=math.inf,
    )
    root = Supervisor("root", [lab.spec("a"), inner], backoff=NO_WAIT)
    await within(root.start(), "the supervisor to start its children")
    await within(root.start_child(lab.spec("session", Restart.TEMPORARY)), "start_child to return")
    await eventually(lab.running("a", "x", "y", "session"))

    await within(root.stop(), "the supervisor to stop its children")

    assert asyncio.all_tasks() == before
    # Reverse start order: the dynamic child, then the nested supervisor's children, then "a".
    assert lab.log[-4:] == ["stop session", "stop y", "stop x", "stop a"]


async def test_stop_is_idempotent_and_wait_then_returns(lab: Lab) -> None:
    root = Supervisor("root", [lab.spec("a")], backoff=NO_WAIT)
    await within(root.start(), "the supervisor to start its children")
    await eventually(lab.running("a"))

    await within(root.stop(), "the supervisor to stop its children")
    await within(root.stop(), "the supervisor to stop its children")
    await within(root.wait(), "the supervisor's run to end")

    assert lab.log == ["start a", "stop a"]
    assert not root.running


async def test_cancelling_run_stops_the_children_and_propagates(lab: Lab) -> None:
    root = Supervisor("root", [lab.spec("a"), lab.spec("b")], backoff=NO_WAIT)
    task = asyncio.create_task(root.run())
    await eventually(lab.running("a", "b"))

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(task, "the supervisor's run to end")

    assert lab.log[-2:] == ["stop b", "stop a"]


async def test_initial_child_that_cannot_start_fails_the_start(lab: Lab) -> None:
    before = asyncio.all_tasks()

    def refuse() -> Actor:
        raise Boom("no resources")

    root = Supervisor("root", [lab.spec("a"), ChildSpec("b", refuse)], backoff=NO_WAIT)

    with pytest.raises(Boom, match="no resources"):
        await within(root.start(), "the supervisor to start its children")

    assert lab.starts("a") == 1
    assert not root.running
    assert lab.current("a").task is None or lab.current("a").task.done()
    assert asyncio.all_tasks() == before


async def test_overrunning_child_is_warned_about_and_still_awaited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancellations: list[str] = []

    class Stubborn(Actor):
        async def run(self) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancellations.append("first")
            try:
                await asyncio.Event().wait()  # ignores the first cancellation
            except asyncio.CancelledError:
                cancellations.append("second")
                raise

    before = asyncio.all_tasks()
    root = Supervisor("root", [ChildSpec("stubborn", Stubborn, shutdown=0.01)], backoff=NO_WAIT)
    await within(root.start(), "the supervisor to start its children")
    await settle()

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await within(root.stop(), "the supervisor to stop its children")

    assert cancellations == ["first", "second"]
    assert asyncio.all_tasks() == before
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'stubborn'" in warning.getMessage() and "'root'" in warning.getMessage()


async def test_child_failing_while_stopping_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Clumsy(Actor):
        async def run(self) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise Boom("dropped the tray on the way out") from None

    root = Supervisor("root", [ChildSpec("clumsy", Clumsy)], backoff=NO_WAIT)
    await within(root.start(), "the supervisor to start its children")
    await settle()

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await within(root.stop(), "the supervisor to stop its children")

    [record] = caplog.records
    assert "'clumsy'" in record.getMessage() and "stopping" in record.getMessage()
    assert isinstance(record.exc_info[1], Boom)


# Restart types


@pytest.mark.parametrize(
    ("restart", "ending", "restarted"),
    [
        (Restart.PERMANENT, "exit", True),
        (Restart.PERMANENT, "crash", True),
        (Restart.TRANSIENT, "exit", False),
        (Restart.TRANSIENT, "crash", True),
        (Restart.TEMPORARY, "exit", False),
        (Restart.TEMPORARY, "crash", False),
    ],
)
async def test_restart_type_decides_whether_an_ended_child_starts_again(
    lab: Lab, started: Start, restart: Restart, ending: str, restarted: bool
) -> None:
    root = await one_child(lab, started, restart)
    first = lab.current("a")

    if ending == "exit":
        first.exit()
    else:
        first.crash()

    if restarted:
        await eventually(lambda: lab.starts("a") == 2 and lab.current("a").task)
        assert lab.current("a") is not first
        assert root.which_children()[0].actor is lab.current("a")
        assert root.restarts == 1
    else:
        # The supervisor has taken note of the end; a restart would have been decided by now.
        await eventually(lambda: root.count_children() == 0)
        assert lab.starts("a") == 1
        assert root.restarts == 0
        if restart is Restart.TEMPORARY:
            assert root.which_children() == []  # forgotten
        else:
            [info] = root.which_children()
            assert (info.id, info.running) == ("a", False)


async def test_cancellation_not_requested_by_the_supervisor_counts_as_a_crash(
    lab: Lab, started: Start, caplog: pytest.LogCaptureFixture
) -> None:
    root = await one_child(lab, started, Restart.TRANSIENT)

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        lab.current("a").task.cancel()
        await eventually(lambda: lab.starts("a") == 2)

    assert root.restarts == 1
    [record] = caplog.records
    assert "'a'" in record.getMessage() and "cancelled" in record.getMessage()


# Logging


async def test_crash_is_logged_once_with_its_traceback(
    lab: Lab, started: Start, caplog: pytest.LogCaptureFixture
) -> None:
    await one_child(lab, started)
    error = Boom("kaput")

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        lab.current("a").crash(error)
        await eventually(lambda: lab.starts("a") == 2 and lab.current("a").task)
        await settle()

    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.name == LOGGER and record.levelno == logging.ERROR
    assert "'root'" in record.getMessage() and "'a'" in record.getMessage()
    assert record.exc_info[1] is error
    assert "Traceback" in caplog.text and "kaput" in caplog.text


async def test_normal_exit_is_logged_at_debug_only(lab: Lab, started: Start, caplog: pytest.LogCaptureFixture) -> None:
    root = await one_child(lab, started, Restart.TRANSIENT)

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        lab.current("a").exit()
        await eventually(lambda: root.count_children() == 0)

    [record] = caplog.records
    assert record.levelno == logging.DEBUG
    assert "'a'" in record.getMessage() and "normally" in record.getMessage()


# Strategies


async def test_one_for_one_restarts_only_the_crashed_child(lab: Lab, started: Start) -> None:
    root = await started(Supervisor("root", [lab.spec(id) for id in "abc"], backoff=NO_WAIT))
    await eventually(lab.running("a", "b", "c"))
    lab.log.clear()

    lab.current("b").crash()
    await eventually(lambda: lab.starts("b") == 2 and lab.current("b").task)
    await settle()

    assert lab.log == ["start b"]
    assert (lab.starts("a"), lab.starts("c")) == (1, 1)
    assert [info.restarts for info in root.which_children()] == [0, 1, 0]
    assert root.restarts == 1


async def test_one_for_all_stops_the_others_in_reverse_then_restarts_all_in_order(lab: Lab, started: Start) -> None:
    root = await started(
        Supervisor("root", [lab.spec(id) for id in "abc"], strategy=Strategy.ONE_FOR_ALL, backoff=NO_WAIT)
    )
    await eventually(lab.running("a", "b", "c"))
    lab.log.clear()

    lab.current("b").crash()
    await eventually(lambda: lab.starts("c") == 2 and lab.current("c").task)

    assert lab.log == ["stop c", "stop a", "start a", "start b", "start c"]
    assert [info.restarts for info in root.which_children()] == [1, 1, 1]
    assert root.restarts == 1  # one restart of the group, as the intensity counts it


async def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it(lab: Lab, started: Start) -> None:
    await started(Supervisor("root", [lab.spec(id) for id in "abcd"], strategy=Strategy.REST_FOR_ONE, backoff=NO_WAIT))
    await eventually(lab.running("a", "b", "c", "d"))
    lab.log.clear()

    lab.current("b").crash()
    await eventually(lambda: lab.starts("d") == 2 and lab.current("d").task)
    await settle()

    assert lab.log == ["stop d", "stop c", "start b", "start c", "start d"]
    assert lab.starts("a") == 1


async def test_dynamic_children_come_last_in_the_rest_for_one_order(lab: Lab, started: Start) -> None:
    root = await started(
        Supervisor("root", [lab.spec("a"), lab.spec("b")], strategy=Strategy.REST_FOR_ONE, backoff=NO_WAIT)
    )
    await within(root.start_child(lab.spec("x")), "start_child to return")
    await eventually(lab.running("a", "b", "x"))
    lab.log.clear()

    lab.current("a").crash()
    await eventually(lambda: lab.starts("x") == 2 and lab.current("x").task)

    assert lab.log == ["stop x", "stop b", "start a", "start b", "start x"]
    assert [info.id for info in root.which_children()] == ["a", "b", "x"]


async def test_group_restart_forgets_temporary_siblings(lab: Lab, started: Start) -> None:
    root = await started(Supervisor("root", [lab.spec("a")], strategy=Strategy.ONE_FOR_ALL, backoff=NO_WAIT))
    await within(root.start_child(lab.spec("t", Restart.TEMPORARY)), "start_child to return")
    await eventually(lab.running("a", "t"))

    lab.current("a").crash()
    await eventually(lambda: lab.starts("a") == 2 and lab.current("a").task)
    await settle()

    assert "stop t" in lab.log
    assert lab.starts("t") == 1
    assert [info.id for info in root.which_children()] == ["a"]


# Restart intensity and escalation


async def test_too_many_restarts_stop_the_children_and_escalate(lab: Lab) -> None:
    root = Supervisor("root", [lab.spec("a"), lab.spec("b")], intensity=2, backoff=NO_WAIT)
    await within(root.start(), "the supervisor to start its children")
    for attempt in (1, 2, 3):
        await eventually(lambda: lab.starts("a") == attempt and lab.current("a").task)
        last_crash = Boom(f"crash {attempt}")
        lab.current("a").crash(last_crash)

    with pytest.raises(RestartIntensityExceeded) as raised:
        await within(root.wait(), "the supervisor's run to end")

    assert raised.value.supervisor == "root"
    assert raised.value.__cause__ is last_crash
    assert root.restarts == 2
    assert lab.starts("a") == 3
    assert lab.log[-1] == "stop b"
    assert not root.running
    assert root.count_children() == 0
    assert not any(info.running for info in root.which_children())
    with pytest.raises(RuntimeError):
        await within(root.start_child(lab.spec("late")), "start_child to return")


async def test_zero_intensity_escalates_on_the_first_restart(lab: Lab) -> None:
    root = Supervisor("root", [lab.spec("a")], intensity=0, backoff=NO_WAIT)
    await within(root.start(), "the supervisor to start its children")
    await eventually(lab.running("a"))

    lab.current("a").crash()

    with pytest.raises(RestartIntensityExceeded):
        await within(root.wait(), "the supervisor's run to end")
    assert lab.starts("a") == 1


async def test_restarts_older_than_the_period_no_longer_count(lab: Lab, started: Start) -> None:
    now = [1000.0]
    root = await started(
        Supervisor("root", [lab.spec("a")], intensity=1, period=10.0, backoff=NO_WAIT, clock=lambda: now[0])
    )
    for attempt in (1, 2, 3):
        await eventually(lambda: lab.starts("a") == attempt and lab.current("a").task)
        lab.current("a").crash()
        now[0] += 10.0  # every crash comes one full period after the one before

    await eventually(lambda: lab.starts("a") == 4)
    assert root.running
    assert root.restarts == 3


async def test_child_that_cannot_be_restarted_counts_as_crashing_again(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    starts: list[Worker] = []

    def start_once() -> Worker:
        if starts:
            raise Boom("cannot start again")
        starts.append(Worker("a", lab.log))
        return starts[0]

    root = Supervisor("root", [ChildSpec("a", start_once)], intensity=2, backoff=NO_WAIT)
    await within(root.start(), "the supervisor to start its children")
    await eventually(lambda: starts[0].task)

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        starts[0].crash()
        with pytest.raises(RestartIntensityExceeded):
            await within(root.wait(), "the supervisor's run to end")

    crashes = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crashes) == 3  # the crash, then two failed restarts; the third is one too many
    assert all(isinstance(r.exc_info[1], Boom) for r in crashes)


def nested(lab: Lab, inner_intensity: int) -> ChildSpec:
    """A supervisor child that gives up on the first restart of its worker ``w``."""
    return ChildSpec(
        "inner",
        lambda: Supervisor("inner", [lab.spec("w")], intensity=inner_intensity, backoff=NO_WAIT),
        shutdown=math.inf,
    )


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ONE, Strategy.ONE_FOR_ALL])
async def test_escalation_is_a_crash_the_parent_handles_by_its_strategy(
    lab: Lab, started: Start, caplog: pytest.LogCaptureFixture, strategy: Strategy
) -> None:
    root = await started(Supervisor("root", [nested(lab, 0), lab.spec("sibling")], strategy=strategy, backoff=NO_WAIT))
    await eventually(lab.running("w", "sibling"))
    first_inner = root.which_children()[0].actor

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        lab.current("w").crash()
        await eventually(lambda: lab.starts("w") == 2 and lab.current("w").task)
        await settle()

    assert root.which_children()[0].actor is not first_inner
    assert root.restarts == 1
    assert lab.starts("sibling") == (2 if strategy is Strategy.ONE_FOR_ALL else 1)
    [escalated] = [r for r in caplog.records if "'inner' crashed" in r.getMessage()]
    assert isinstance(escalated.exc_info[1], RestartIntensityExceeded)


async def test_escalation_climbs_to_the_top_when_every_level_gives_up(lab: Lab) -> None:
    before = asyncio.all_tasks()
    root = Supervisor("root", [nested(lab, 0), lab.spec("sibling")], intensity=0, backoff=NO_WAIT)
    await within(root.start(), "the supervisor to start its children")
    await eventually(lab.running("w", "sibling"))

    lab.current("w").crash()

    with pytest.raises(RestartIntensityExceeded) as raised:
        await within(root.wait(), "the supervisor's run to end")
    assert raised.value.supervisor == "root"
    assert isinstance(raised.value.__cause__, RestartIntensityExceeded)
    assert raised.value.__cause__.supervisor == "inner"
    assert "stop sibling" in lab.log
    assert asyncio.all_tasks() == before


# Backoff


class RecordingWait(tenacity.wait.wait_base):
    """A tenacity wait strategy that notes what it was asked and answers ``delay_for(error)``."""

    def __init__(self, delay_for: Callable[[BaseException | None], float] = lambda _: 0.0) -> None:
        self.asked: list[tuple[int, BaseException | None]] = []
        self.delay_for = delay_for

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        self.asked.append((retry_state.attempt_number, error))
        return self.delay_for(error)


async def test_backoff_is_asked_with_the_childs_restarts_within_the_period(lab: Lab, started: Start) -> None:
    now = [1000.0]
    wait = RecordingWait()
    await started(
        Supervisor(
            "root",
            [lab.spec("a"), lab.spec("b")],
            intensity=10,
            period=60.0,
            backoff=wait,
            clock=lambda: now[0],
        )
    )
    errors = []

    async def end(id: str, how: str) -> None:
        await eventually(lambda: lab.current(id).task)
        count = lab.starts(id)
        if how == "crash":
            errors.append(Boom(id))
            lab.current(id).crash(errors[-1])
        else:
            lab.current(id).exit()
        await eventually(lambda: lab.starts(id) == count + 1)

    await end("a", "crash")
    await end("a", "crash")
    await end("b", "crash")
    await end("a", "exit")  # a permanent child's normal exit is restarted too
    now[0] += 60.0  # a calm period: the next restart is a first attempt again
    await end("a", "crash")

    assert wait.asked == [
        (1, errors[0]),
        (2, errors[1]),
        (1, errors[2]),
        (3, None),
        (1, errors[3]),
    ]


async def test_supervisor_keeps_working_while_a_restart_waits_out_its_backoff(lab: Lab, started: Start) -> None:
    class SlowBoom(Boom):
        """Crashes that the test's backoff answers with an hour's wait."""

    wait = RecordingWait(lambda error: 3600.0 if isinstance(error, SlowBoom) else 0.0)
    root = await started(Supervisor("root", [lab.spec("a"), lab.spec("b")], backoff=wait))
    await eventually(lab.running("a", "b"))

    lab.current("a").crash(SlowBoom())
    lab.current("b").crash()
    await eventually(lambda: lab.starts("b") == 2 and lab.current("b").task)
    await within(root.start_child(lab.spec("dynamic")), "start_child to return")
    await eventually(lab.running("dynamic"))
    await within(root.terminate_child("dynamic"), "terminate_child to return")

    assert lab.starts("a") == 1  # still waiting
    assert root.restarts == 2
    assert [(info.id, info.running) for info in root.which_children()] == [
        ("a", False),
        ("b", True),
    ]
    before_stop = lab.log.copy()
    await within(root.stop(), "the supervisor to stop its children")  # does not wait for the hour
    assert lab.log[len(before_stop) :] == ["stop b"]


async def test_child_taken_into_a_later_group_restart_is_started_only_once(lab: Lab, started: Start) -> None:
    class SlowBoom(Boom):
        """Crashes that the test's backoff answers with a short real wait."""

    wait = RecordingWait(lambda error: 0.02 if isinstance(error, SlowBoom) else 0.0)
    root = await started(Supervisor("root", [lab.spec("a")], strategy=Strategy.ONE_FOR_ALL, backoff=wait))
    await eventually(lab.running("a"))
    lab.current("a").crash(SlowBoom())  # "a" waits 20 ms for its restart...
    await eventually(lambda: root.restarts == 1)
    await within(root.start_child(lab.spec("x")), "start_child to return")
    await eventually(lab.running("x"))
    lab.current("x").crash()  # ...but this group restart, without delay, takes "a" along
    await eventually(lambda: lab.starts("a") == 2 and lab.current("a").task)

    await asyncio.sleep(0.05)  # the first restart's timer has fired by now
    await settle()

    assert lab.starts("a") == 2
    assert root.count_children() == 2


async def test_default_backoff_starts_short_doubles_and_is_capped() -> None:
    backoff = RestartBackoff(default_backoff())
    first, fifth, tenth = (backoff.delay(attempt, Boom()) for attempt in (1, 5, 10))

    assert 0.05 <= first <= 0.1
    assert 0.8 <= fifth <= 0.85
    assert tenth == 2.0


# Dynamic children


async def test_start_child_adds_a_running_child_last(lab: Lab, started: Start) -> None:
    root = await started(Supervisor("root", [lab.spec("a")], backoff=NO_WAIT))

    actor = await within(root.start_child(lab.spec("x", Restart.TEMPORARY)), "start_child to return")

    assert actor is lab.current("x")
    assert [(info.id, info.running) for info in root.which_children()] == [
        ("a", True),
        ("x", True),
    ]
    assert root.count_children() == 2
    await eventually(lab.running("x"))
    assert actor.task.get_name() == "root/x"


async def test_a_temporary_child_that_ended_is_forgotten_at_once_not_when_the_next_one_ends(
    started: Start,
) -> None:
    """A session supervisor sees thousands of children come and go: the last one to end must not
    stay referenced (its actor, task and error) until another ends, which may be much later."""

    class Brief(Actor):
        async def run(self) -> None:
            return

    root = await started(Supervisor("root", backoff=NO_WAIT))
    made = [Brief("brief")]
    gone = weakref.ref(made[0])
    # The factory hands its one actor over, keeping no reference of its own.
    await within(root.start_child(ChildSpec("brief", made.pop, restart=Restart.TEMPORARY)), "start_child")
    await eventually(lambda: not root.which_children())
    for _ in range(5):  # the supervisor goes back to waiting for its next event
        await asyncio.sleep(0)
    gc.collect()
    assert gone() is None
    assert root.running


async def test_start_child_needs_a_running_supervisor(lab: Lab) -> None:
    root = Supervisor("root", backoff=NO_WAIT)
    with pytest.raises(RuntimeError, match="not running"):
        await within(root.start_child(lab.spec("x")), "start_child to return")

    await within(root.start(), "the supervisor to start its children")
    await within(root.stop(), "the supervisor to stop its children")

    with pytest.raises(RuntimeError, match="not running"):
        await within(root.start_child(lab.spec("x")), "start_child to return")
    assert lab.starts("x") == 0


async def test_start_child_refuses_an_id_in_use(lab: Lab, started: Start) -> None:
    root = await started(Supervisor("root", [lab.spec("a")], backoff=NO_WAIT))

    with pytest.raises(ValueError, match="'a'"):
        await within(root.start_child(lab.spec("a")), "start_child to return")
    assert lab.starts("a") == 1


async def test_start_child_passes_on_a_factory_error_and_adds_nothing(started: Start) -> None:
    root = await started(Supervisor("root", backoff=NO_WAIT))

    def refuse() -> Actor:
        raise Boom("full")

    with pytest.raises(Boom):
        await within(root.start_child(ChildSpec("x", refuse)), "start_child to return")
    assert root.which_children() == []


async def test_terminate_child_stops_it_for_good(lab: Lab, started: Start) -> None:
    root = await started(Supervisor("root", [lab.spec(id) for id in "ab"], backoff=NO_WAIT))
    await eventually(lab.running("a", "b"))

    await within(root.terminate_child("a"), "terminate_child to return")
    await settle()

    assert lab.log[-1] == "stop a"
    assert lab.current("a").task.done()
    assert lab.starts("a") == 1
    assert root.restarts == 0
    assert [info.id for info in root.which_children()] == ["b"]


async def test_stop_waits_for_a_child_whose_termination_was_interrupted() -> None:
    gate = asyncio.Event()

    class Lingering(Actor):
        async def run(self) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await gate.wait()  # finishes only when the test says so
                raise

    before = asyncio.all_tasks()
    root = Supervisor("root", [ChildSpec("slow", Lingering, shutdown=math.inf)], backoff=NO_WAIT)
    await within(root.start(), "the supervisor to start its children")
    await settle()
    terminating = asyncio.create_task(root.terminate_child("slow"))
    await settle()
    terminating.cancel()  # whoever asked gave up waiting
    with pytest.raises(asyncio.CancelledError):
        await within(terminating, "the interrupted terminate_child to end")

    stopping = asyncio.create_task(root.stop())
    await settle()
    assert not stopping.done()  # still waiting for the child it cancelled

    gate.set()
    await within(stopping, "stop to end once the child finished")
    assert asyncio.all_tasks() == before


async def test_terminate_child_ignores_an_unknown_id(lab: Lab, started: Start) -> None:
    root = await started(Supervisor("root", [lab.spec("a")], backoff=NO_WAIT))

    await within(root.terminate_child("gone"), "terminate_child to return")

    assert root.count_children() == 1


async def test_many_dynamic_temporary_children_are_stopped_together(lab: Lab, started: Start) -> None:
    sessions = 1000
    cancelled = 0
    seen_when_finishing: list[int] = []

    class Session(Actor):
        async def run(self) -> None:
            nonlocal cancelled
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled += 1
                await asyncio.sleep(0)  # stopped one by one, the first would see only itself
                seen_when_finishing.append(cancelled)
                raise

    before = asyncio.all_tasks()
    root = Supervisor("root", [lab.spec("static")], backoff=NO_WAIT)
    await within(root.start(), "the supervisor to start its children")
    for number in range(sessions):
        await within(
            root.start_child(ChildSpec(f"session-{number}", Session, Restart.TEMPORARY)), "start_child to return"
        )
    await settle()
    assert root.count_children() == sessions + 1

    await within(root.stop(), "the supervisor to stop its children")

    assert len(seen_when_finishing) == sessions
    assert min(seen_when_finishing) == sessions
    assert lab.log[-1] == "stop static"  # static children go after the dynamic ones
    assert [(info.id, info.running) for info in root.which_children()] == [("static", False)]
    assert asyncio.all_tasks() == before
