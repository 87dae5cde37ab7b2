"""``siscom serve --workers N``: several gateway processes behind one listening socket.

One Python process streams on one core. To use more, the parent binds the listening socket
once and starts ``N`` workers that all accept on it; each worker is a complete, ordinary
``siscom serve`` (its own supervision tree, consumer and sessions), started with
``--bind fd://FD`` so that it serves the inherited socket instead of binding its own.

A worker must stream every device, so every worker reads every partition: the consumer joins
no consumer group (see :mod:`siscom.pipeline.consumer`), and ``N`` workers are ``N`` independent
readers of the topic, not a group that splits it.

Prometheus counts are kept per worker and added up by whichever worker answers ``/metrics``:
the parent makes a fresh directory for the run (under ``TMPDIR``, /tmp by default), hands it to
every worker as ``PROMETHEUS_MULTIPROC_DIR`` (see :mod:`siscom.prometheus`), and removes it at the
end.

The parent does nothing else. SIGTERM or SIGINT is passed on to every worker, which closes its
clients with 1001 and exits; the parent exits when all have, with status 0 if they all did. A
worker that exits on its own (its supervision tree gave up) brings the others down too and its
status becomes the parent's, so the process manager that restarts failed services sees it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

logger = logging.getLogger(__name__)

#: How often the parent looks at its workers.
POLL_INTERVAL = 0.1
#: How long workers get to close their clients and exit before they are killed.
STOP_TIMEOUT = 30.0


def listening_socket(bind: str, backlog: int = 1024) -> socket.socket:
    """A TCP socket listening on ``HOST:PORT`` (IPv6 hosts in brackets), inheritable by workers."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, int(port)))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def worker_command(fd: int, metrics_fd: int | None = None) -> list[str]:
    command = [sys.executable, "-m", "siscom", "serve", "--bind", f"fd://{fd}"]
    if metrics_fd is not None:
        command += ["--metrics-bind", f"fd://{metrics_fd}"]
    return command


#: prometheus_client's multiprocess directory variable (prometheus_client 0.26, values.py).
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def worker_environment(metrics_dir: str) -> dict[str, str]:
    """The parent's environment, with the run's own Prometheus directory.

    A directory from outside (a variable left over, an earlier run) is replaced: prometheus_client
    adds up every file in it, so it must start empty and belong to this run alone.
    """
    return {**os.environ, MULTIPROC_DIR: metrics_dir}


def run_workers(bind: str, count: int, metrics_bind: str | None = None) -> int:
    """Serve ``bind`` with ``count`` worker processes until told to stop; return the exit status.

    With ``metrics_bind`` (METRICS_BIND) the workers share that listening socket too.
    """
    sock = listening_socket(bind)
    metrics_sock = listening_socket(metrics_bind) if metrics_bind else None
    fds = (sock.fileno(),) if metrics_sock is None else (sock.fileno(), metrics_sock.fileno())
    metrics_dir = tempfile.mkdtemp(prefix="siscom-metrics-")
    env = worker_environment(metrics_dir)
    workers: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop_all(signum: int | None = None, _frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    previous = {signum: signal.signal(signum, stop_all) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(count):
            workers.append(subprocess.Popen(worker_command(*fds), pass_fds=fds, env=env))
        logger.info("Serving %s with %d workers (pids %s)", bind, count, ", ".join(str(w.pid) for w in workers))
        status = _wait(workers, stop_all, lambda: stopping, metrics_dir)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _kill_stragglers(workers)
        sock.close()
        if metrics_sock is not None:
            metrics_sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return status


def _wait(
    workers: list[subprocess.Popen[bytes]],
    stop_all: Callable[[], None],
    stopping: Callable[[], bool],
    metrics_dir: str,
) -> int:
    """Wait for every worker to exit; the first failure (or the stop request) stops the rest."""
    status = 0
    deadline: float | None = None
    dead: set[int] = set()
    while any(worker.poll() is None for worker in workers):
        for worker in workers:
            code = worker.returncode
            if code is not None and worker.pid not in dead:
                # Its connections are gone; its counters stay in the totals (prometheus_client
                # 0.26 multiprocess.py: mark_process_dead removes only the live* gauge files).
                dead.add(worker.pid)
                mark_process_dead(worker.pid, metrics_dir)
            if code is not None and code != 0 and status == 0:
                status = code if code > 0 else 1
                if not stopping():
                    logger.error("Worker %d exited with %d; stopping the others", worker.pid, code)
                    stop_all()
        if stopping() and deadline is None:
            deadline = time.monotonic() + STOP_TIMEOUT
        if deadline is not None and time.monotonic() > deadline:
            logger.error("Workers still running %.0f s after the stop request; killing them", STOP_TIMEOUT)
            break
        time.sleep(POLL_INTERVAL)
    for worker in workers:
        code = worker.poll()
        if code is not None and code != 0 and status == 0:
            status = code if code > 0 else 1
    return status


def _kill_stragglers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
