"""The child-process helper the dev broker, the tests and the benchmarks share: real processes,
started, waited for and stopped with everything they forked."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest
import websockets
from support.server import REPO_ROOT

from bench.http import http_status
from siscom.dev.processes import ChildProcess, StartFailed, clean_env, free_port, group_members

# A parent that forks a worker (which writes its PID to a file, and ignores SIGTERM when told
# to), then sleeps; with "leave" it exits on SIGTERM without stopping its worker.
FORKING_PARENT = """
import signal, subprocess, sys, time
worker_ignores, parent_mode, pid_file = sys.argv[1:4]
code = "import signal, time; "
if worker_ignores == "yes":
    code += "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
code += "time.sleep(600)"
worker = subprocess.Popen([sys.executable, "-c", code])
open(pid_file, "w").write(str(worker.pid))
if parent_mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except FileNotFoundError:
        return False
    return text[text.rfind(b")") + 2 : text.rfind(b")") + 3] not in (b"Z", b"X")


def start_forking_parent(tmp_path: Path, worker_ignores: str, parent_mode: str) -> tuple[ChildProcess, int]:
    pid_file = tmp_path / "worker.pid"
    log = tmp_path / "parent.log"
    child = ChildProcess.start(
        [sys.executable, "-c", FORKING_PARENT, worker_ignores, parent_mode, str(pid_file)],
        lambda: "ready" in log.read_text(),
        timeout=10,
        log_path=log,
    )
    return child, int(pid_file.read_text())


@pytest.fixture
def stopped() -> list[ChildProcess]:
    """Processes a test started; killed at teardown if the test did not stop them."""
    children: list[ChildProcess] = []
    yield children
    for child in children:
        child.kill()


def test_a_parent_that_ignores_sigterm_is_killed_after_the_timeout_with_its_worker(tmp_path, stopped):
    """Killing only the parent would leave its worker running, as ``hypercorn -w 1`` leaves one."""
    child, worker = start_forking_parent(tmp_path, worker_ignores="no", parent_mode="ignore")
    stopped.append(child)
    started = time.monotonic()

    assert child.stop(timeout=0.5) == -9

    assert time.monotonic() - started < 5
    assert not alive(worker)
    assert group_members(child.pid) == []


def test_a_parent_that_exits_without_its_stubborn_worker_leaves_nothing_behind(tmp_path, stopped):
    child, worker = start_forking_parent(tmp_path, worker_ignores="yes", parent_mode="leave")
    stopped.append(child)

    assert child.stop(timeout=1.0) == -15  # the parent ended by the signal itself

    assert not alive(worker)


def test_a_paused_process_group_still_stops_politely(tmp_path, stopped):
    child, worker = start_forking_parent(tmp_path, worker_ignores="no", parent_mode="leave")
    stopped.append(child)
    child.send_signal(signal.SIGSTOP)  # every member

    assert child.stop(timeout=2.0) == -15
    assert not alive(worker)


def test_a_process_that_exits_before_it_is_ready_fails_the_start_with_its_output(tmp_path):
    with pytest.raises(StartFailed, match=r"(?s)python3?\S* exited with 3 before it was ready.*no config here"):
        ChildProcess.start(
            [sys.executable, "-c", "print('no config here'); raise SystemExit(3)"],
            lambda: False,
            timeout=10,
            log_path=tmp_path / "out.log",
        )


def test_a_process_never_ready_fails_the_start_and_is_killed(tmp_path):
    pid_file = tmp_path / "worker.pid"
    with pytest.raises(StartFailed, match=r"sleeper not ready within 0.5 s"):
        ChildProcess.start(
            [sys.executable, "-c", FORKING_PARENT, "yes", "ignore", str(pid_file)],
            lambda: False,
            timeout=0.5,
            name="sleeper",
        )
    deadline = time.monotonic() + 5
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_file.exists():  # the worker was forked before the kill: it went with the group
        assert not alive(int(pid_file.read_text()))


async def test_plain_hypercorn_stops_its_forked_worker_in_order_and_leaves_nothing_behind(tmp_path):
    """The stop signal goes to the parent, which tells its worker to shut down, so a connected
    client gets a close frame. A signal to the whole group would kill the worker, which has no
    SIGTERM handler of its own, and drop the client without one (measured: no close frame)."""
    port = free_port()
    hypercorn = Path(sys.executable).with_name("hypercorn")
    child = await asyncio.to_thread(
        ChildProcess.start,
        [str(hypercorn), "--workers", "1", "--bind", f"127.0.0.1:{port}", "siscom.app:create_app()"],
        lambda: http_status(f"http://127.0.0.1:{port}/health") == 200,
        timeout=30,
        log_path=tmp_path / "hypercorn.log",
        env=clean_env(
            {
                "PYTHONPATH": str(REPO_ROOT),
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
                "KAFKA_TOPIC": "nowhere",
            }
        ),
        cwd=tmp_path,
    )
    try:
        workers = [pid for pid in group_members(child.pid) if pid != child.pid]
        assert workers, "hypercorn --workers 1 forks a worker"
        async with websockets.connect(f"ws://127.0.0.1:{port}/api/v1/stream") as client:
            stopping = asyncio.create_task(asyncio.to_thread(child.stop, 15))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(15):
                    while True:
                        await client.recv()
            status = await stopping
    finally:
        await asyncio.to_thread(child.stop, 15)
    assert closed.value.rcvd is not None, "the worker was killed, not shut down"
    assert status == 0, child.log_tail()
    assert group_members(child.pid) == []
    assert not any(alive(pid) for pid in workers)
