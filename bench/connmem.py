"""Where a server's memory per connection goes: ``python -m bench.connmem [--clients N] [--target T]``.

Starts a broker and one server under test with allocation tracing on (``BENCH_TRACEMALLOC``,
see ``bench/gcprobe/sitecustomize.py``), takes a snapshot with no client, connects ``N`` idle
stream clients (5 devices each, from another process, so their allocations are not counted),
waits for the keep-alives to have gone round, takes a second snapshot, and prints per
connection: the RSS difference, the traced bytes by package and by source line, and the objects
the garbage collector tracks by type (what every full collection walks). Diagnostic only: the
tracing slows the server, so its figures are not the benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import signal
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from bench.clients import ClientPool
from bench.scenarios import TARGETS
from bench.scenarios.harness import MB, Bench, Options, wait_connections
from bench.servers import HOST
from siscom.dev.broker import TansuBroker

_GROUPS = ("hypercorn", "quart", "wsproto", "h11", "werkzeug", "asyncio", "aiokafka", "supervisors", "siscom")


def _group(filename: str) -> str:
    parts = Path(filename).parts
    for name in _GROUPS:
        if name in parts:
            return name
    return Path(filename).name


async def _snapshot(
    pid: int, prefix: str, index: int, timeout: float = 120.0
) -> tuple[tracemalloc.Snapshot, Counter[str]]:
    os.kill(pid, signal.SIGUSR1)
    done = Path(f"{prefix}.{index}.done")
    deadline = time.monotonic() + timeout
    while not done.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the server wrote no snapshot")
        await asyncio.sleep(0.2)
    snapshot = tracemalloc.Snapshot.load(f"{prefix}.{index}.snap")
    with open(f"{prefix}.{index}.types", "rb") as types:
        return snapshot, Counter(pickle.load(types))


async def measure(
    clients: int, target_name: str, keepalive: float, workdir: Path, frames: int = 1, rss_only: bool = False
) -> None:
    target = TARGETS[target_name]
    prefix = str(workdir / "connmem")
    tracing = {} if rss_only else {"BENCH_TRACEMALLOC": prefix, "BENCH_TRACEMALLOC_FRAMES": str(frames)}
    with TansuBroker(log_path=workdir / "tansu.log") as broker:
        bench = Bench(broker, Options(workdir=workdir))
        topic = await bench.topic("connmem")
        server = bench.server(target, topic, **tracing, STREAM_KEEPALIVE_SECONDS=str(keepalive), LOG_LEVEL="ERROR")
        await server.start(timeout=60.0)
        pool = None
        try:
            pid = server.pid
            await asyncio.sleep(1.0)
            rss0 = server.rss_bytes()
            if not rss_only:
                before, types0 = await _snapshot(pid, prefix, 0)
            devices = [f"dev-{n:05d}" for n in range(clients * 5)]
            subscriptions = [tuple(devices[n * 5 : n * 5 + 5]) for n in range(clients)]
            pool = ClientPool(HOST, server.port, subscriptions, processes=1, concurrency=16)
            await pool.start(timeout=max(120.0, clients / 20))
            await wait_connections(server, clients, timeout=max(30.0, clients / 100))
            await asyncio.sleep(keepalive * 1.5)  # every session has sent a keep-alive
            rss1 = server.rss_bytes()
            if not rss_only:
                after, types1 = await _snapshot(pid, prefix, 1)
        finally:
            if pool is not None:
                await pool.stop()
            await asyncio.to_thread(server.stop)
    per = 1024.0 * clients
    if rss_only:
        print(
            f"== {target_name}: {clients} idle stream clients x 5 devices, keep-alive every {keepalive:g} s, no tracing"
        )
        print(f"RSS per connection          {(rss1 - rss0) / per:8.1f} KB  ({rss0 / MB:.1f} -> {rss1 / MB:.1f} MB)")
        return
    stats = after.compare_to(before, "filename")
    traced = sum(stat.size_diff for stat in stats)
    print(f"== {target_name}: {clients} idle stream clients x 5 devices, keep-alive every {keepalive:g} s")
    print(f"RSS per connection          {(rss1 - rss0) / per:8.1f} KB  ({rss0 / MB:.1f} -> {rss1 / MB:.1f} MB)")
    print(
        f"traced per connection       {traced / per:8.1f} KB  "
        "(Python allocations; the rest is the allocator's and the kernel's)"
    )
    groups: Counter[str] = Counter()
    for stat in stats:
        groups[_group(stat.traceback[-1].filename)] += stat.size_diff
    print("\ntraced KB per connection, by package:")
    for name, size in groups.most_common(12):
        print(f"  {size / per:7.2f}  {name}")
    print("\ntraced KB per connection, top source lines:")
    for stat in after.compare_to(before, "lineno")[:25]:
        frame = stat.traceback[-1]
        where = "/".join(Path(frame.filename).parts[-2:])
        print(f"  {stat.size_diff / per:7.2f}  {stat.count_diff / clients:6.1f} blocks  {where}:{frame.lineno}")
    ours = [
        stat
        for stat in after.compare_to(before, "lineno")
        if _group(stat.traceback[-1].filename) in ("siscom", "supervisors")
    ]
    print("\ntraced KB per connection, the gateway's own lines:")
    for stat in ours[:12]:
        frame = stat.traceback[-1]
        where = "/".join(Path(frame.filename).parts[-2:])
        print(f"  {stat.size_diff / per:7.2f}  {stat.count_diff / clients:6.1f} blocks  {where}:{frame.lineno}")
    if frames > 1:
        print(f"\ntraced KB per connection, top allocation sites ({frames} frames, innermost first):")
        for stat in after.compare_to(before, "traceback")[:40]:
            print(f"  {stat.size_diff / per:7.2f}  {stat.count_diff / clients:6.1f} blocks")
            for frame in reversed(stat.traceback):
                print(f"             {'/'.join(Path(frame.filename).parts[-2:])}:{frame.lineno}")
    print("\nobjects the garbage collector tracks, per connection:")
    grown = types1 - types0
    print(f"  {sum(grown.values()) / clients:7.1f}  in all")
    for name, count in grown.most_common(20):
        print(f"  {count / clients:7.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.connmem", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--target", default="siscom", help=f"one of {', '.join(TARGETS)}")
    parser.add_argument("--keepalive", type=float, default=5.0)
    parser.add_argument(
        "--frames",
        type=int,
        default=1,
        help="frames of traceback to keep per allocation; over 1, the allocation sites are printed",
    )
    parser.add_argument(
        "--rss-only", action="store_true", help="no tracing: only the RSS per connection, as the benchmark measures it"
    )
    args = parser.parse_args()
    from bench.__main__ import raise_open_files_limit

    raise_open_files_limit()
    with tempfile.TemporaryDirectory(prefix="siscom-connmem-") as scratch:
        asyncio.run(measure(args.clients, args.target, args.keepalive, Path(scratch), args.frames, args.rss_only))


if __name__ == "__main__":
    main()
