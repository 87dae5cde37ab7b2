"""Garbage-collector pauses of a server under test, logged for the harness (benchmark only).

The harness puts this directory on the ``PYTHONPATH`` of every Python server it starts (the
gateway, its workers and the baselines alike) with ``BENCH_GC_LOG`` set to a file prefix.
Python imports ``sitecustomize`` at start-up, so this module, without any change to the
servers, times every collection of the cyclic garbage collector (``gc.callbacks``) and appends
``<end time> <generation> <seconds>`` per collection to ``<prefix>.<pid>``, flushed by a daemon
thread twice a second (nothing is written inside a collection). Being first on the path, it
stands in for any ``sitecustomize`` of the interpreter's own (the project's environment has none).

Why: a full collection walks every object the collector tracks, and a server holding thousands
of connections tracks hundreds of objects per connection (coroutines, tasks, futures, bound
methods...). While it walks, the event loop is stopped: every frame waiting is delayed by the
whole pause, which is a latency the profiles of the server's own code do not show.
"""

from __future__ import annotations

import gc
import os
import threading
import time

_PREFIX = os.environ.get("BENCH_GC_LOG")

if _PREFIX:
    _events: list[str] = []
    _started = [0.0]

    def _timed(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
        else:
            _events.append(f"{time.time():.4f} {info['generation']} {time.perf_counter() - _started[0]:.6f}\n")

    def _flush() -> None:
        while True:
            time.sleep(0.5)
            if _events:
                taken = _events[:]
                del _events[: len(taken)]
                with open(f"{_PREFIX}.{os.getpid()}", "a") as log:
                    log.writelines(taken)

    gc.callbacks.append(_timed)
    threading.Thread(target=_flush, name="bench-gc-log", daemon=True).start()

_SNAPSHOTS = os.environ.get("BENCH_TRACEMALLOC")

if _SNAPSHOTS:
    # For bench.connmem: trace allocations from the start, and on SIGUSR1 write a snapshot and
    # the count of tracked objects per type to ``<prefix>.<n>.snap`` / ``.types``; each allocation
    # keeps ``BENCH_TRACEMALLOC_FRAMES`` frames of its traceback (1 unless set).
    import collections
    import pickle
    import signal
    import tracemalloc

    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))
    _taken = [0]

    def _snapshot(signum: int, frame: object) -> None:
        gc.collect()
        path = f"{_SNAPSHOTS}.{_taken[0]}"
        _taken[0] += 1
        tracemalloc.take_snapshot().dump(path + ".snap")
        counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
        with open(path + ".types", "wb") as out:
            pickle.dump(dict(counts), out)
        with open(path + ".done", "w"):
            pass

    signal.signal(signal.SIGUSR1, _snapshot)
