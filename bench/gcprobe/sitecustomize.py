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

_MALLOC = os.environ.get("BENCH_MALLOC_STATS")

if _MALLOC:
    # Where a server's bytes are, without tracing its allocations (tracing costs more memory than
    # it measures): on SIGUSR2 append to ``<prefix>`` one JSON line with the RSS, glibc's heap
    # (``mallinfo2``: bytes the heap holds, bytes of it free, what ``malloc_trim`` could give back
    # from its top) and pymalloc's arenas (``sys._debugmallocstats``, whose report goes to the C
    # stderr: read back through a temporary file on descriptor 2 for the call).
    import ctypes
    import json
    import signal
    import sys
    import tempfile

    _FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()

    class _MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]

    def _glibc() -> dict[str, int]:
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallinfo2.restype = _MallInfo2
        except (OSError, AttributeError):
            return {}
        info = libc.mallinfo2()
        return {name: getattr(info, name) for name in _FIELDS}

    def _pymalloc() -> dict[str, int]:
        saved = os.dup(2)
        with tempfile.TemporaryFile() as report:
            try:
                sys.stderr.flush()
                os.dup2(report.fileno(), 2)
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            report.seek(0)
            text = report.read().decode(errors="replace")
        found = {}
        for line in text.splitlines():
            label, _, value = line.partition("=")
            if label.startswith("# arenas") or label.startswith("# bytes in"):
                found[label.strip("# ").strip()] = int(value.strip().replace(",", ""))
            elif "unused pools" in label:
                found["unused pool bytes"] = int(value.strip().replace(",", ""))
        found["arena bytes"] = found.get("arenas allocated current", 0) * 1048576
        return found

    _MALLOC_PATH: str = _MALLOC

    def _malloc_stats(signum: int, frame: object) -> None:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        line = {"at": time.time(), "rss": rss, "glibc": _glibc(), "pymalloc": _pymalloc()}
        with open(_MALLOC_PATH, "a") as out:
            out.write(json.dumps(line) + "\n")

    signal.signal(signal.SIGUSR2, _malloc_stats)
