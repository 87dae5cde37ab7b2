"""``pan``: map clients that move their box 9 times a second, beside a canary, against the same
map clients holding still.

10,000 simulated vehicles (the brief's record shape, moving) report at 100 records/s. 200 map
clients, in a process of their own, each watch a box of 0.04 degrees (about 4 km, a good part of
the fleet's area: about 1,600 devices in view) and, in the ``pan`` run, send
``{"action":"subscribe","bbox":[...]}`` 9 times a second (within the default allowance of 10
messages per second), moving the box by 0.00005 degrees (about 5 m) east, then west, ten moves
each way: a few devices enter or leave per move, many stay in view. (Larger steps make the
frames of the devices that enter, not the index, what the run measures.) In the ``still`` run they keep their box. A
canary (one client of 500 devices, about 5 frames a second, in the harness's client pool) measures the latency everyone
else gets.

Printed: the canary's latency p50/p99, the clients shed with 1013 (the server's
``overload_closes``), the server's event-loop lag (its ``loop_lag`` gauge, the worst of each
second, sampled every half second), pans sent per second and the server's CPU.
Target: panning sheds nobody and keeps the canary's p99 <= 250 ms. ``--clients`` sets the
number of map clients.

First, in process (no broker, no sockets): the same fleet and boxes, 200 stream cores, ten moves
each; the CPU time of a pan, the devices the index checked for it and the frames it queued. This
figure does not depend on what else the machine runs as much as the end-to-end run does.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from bench import wsclient
from bench.clients import stream_path
from bench.report import Result, Row, Verdict
from bench.scenarios.harness import Bench, Scenario, Shape, ms
from bench.scenarios.load import LoadRun
from bench.scenarios.viewport import POLICY, _records, scattered
from bench.servers import HOST, SISCOM, Target
from siscom.core.geo import BBox
from siscom.core.mapoptions import MapOptions
from siscom.core.mapstream import MapStreamCore
from siscom.core.subscriptions import SubscriptionTable

BOX_DEGREES = 0.04
STEP_DEGREES = 0.00005
MOVES_PER_SECOND = 9.0
#: Moves one way before turning back, so that boxes stay over the fleet.
MOVES_EACH_WAY = 10


def pan_cost(devices: int, clients: int, moves: int, seed: int) -> dict[str, float | None]:
    """In process: the CPU time of one pan (the stream core's answer and the index's work, no
    sockets), the frames it queues, and the devices the index checked for it."""
    first, _ = _records(devices, 1, 1.0, seed)
    table = SubscriptionTable()
    for delivery in first:
        table.remember(delivery)
    boxes = _boxes(clients, seed)
    cores = []
    for box in boxes:
        core = MapStreamCore(None, table=table, policy=POLICY, options=MapOptions(bbox=box))
        core.open(0.0)
        while core.take(0.0):
            pass
        cores.append(core)
    index = table.viewports
    examined = getattr(index, "examined", None)
    frames = 0
    began = time.process_time()
    for move in range(moves):
        offset = STEP_DEGREES * (move % MOVES_EACH_WAY + 1)
        for core, box in zip(cores, boxes):
            moved = [box.min_lon + offset, box.min_lat, box.max_lon + offset, box.max_lat]
            core.receive(json.dumps({"action": "subscribe", "bbox": moved}), 0.0)
            while texts := core.take(0.0):
                frames += len(texts)
    cpu = time.process_time() - began
    pans = moves * clients
    return {
        "cpu_us_per_pan": 1e6 * cpu / pans,
        "frames_per_pan": frames / pans,
        "examined_per_pan": None if examined is None else (index.examined - examined) / pans,  # type: ignore[attr-defined]
        "in_view": sum(len(index.devices_in(box)) for box in boxes) / clients,
    }


def _boxes(count: int, seed: int) -> list[BBox]:
    half = BOX_DEGREES / 2
    return [BBox(lon - half, lat - half, lon + half, lat + half) for lat, lon in scattered(count, seed, 0.5)]


async def _pan_clients(port: int, boxes: list[BBox], pan: bool, conn: Connection) -> None:
    """Open a client per box, pan them (or not) until told to stop, and report what they got."""
    frames = Counter[str]()

    def on_text(payload: bytes, arrived: float) -> None:
        frames[payload[:20].decode(errors="replace")] += 1

    clients = []
    for box in boxes:
        clients.append(await wsclient.open_stream(HOST, port, stream_path(box), on_text, timeout=30.0))
    conn.send(("connected", len(clients)))
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def stopped() -> None:
        if not stop.done():
            stop.set_result(conn.recv())

    loop.add_reader(conn.fileno(), stopped)
    sent, move = 0, 0
    interval = 1.0 / MOVES_PER_SECOND
    due = loop.time()
    while not stop.done():
        if pan:
            direction = 1 if (move // MOVES_EACH_WAY) % 2 == 0 else -1
            offset = STEP_DEGREES * (
                move % MOVES_EACH_WAY + 1 if direction > 0 else MOVES_EACH_WAY - move % MOVES_EACH_WAY - 1
            )
            for client, box in zip(clients, boxes):
                moved = [box.min_lon + offset, box.min_lat, box.max_lon + offset, box.max_lat]
                client.send_text(json.dumps({"action": "subscribe", "bbox": moved}))
                sent += 1
            move += 1
        due += interval
        await asyncio.wait([stop], timeout=max(0.0, due - loop.time()))
    closes = Counter(client.close_code for client in clients if client.close_code is not None)
    for client in clients:
        client.abort()
    conn.send(("report", sent, dict(frames), {str(code): n for code, n in closes.items()}))


def _pan_process(port: int, boxes: list[BBox], pan: bool, conn: Connection) -> None:
    asyncio.run(_pan_clients(port, boxes, pan, conn))


async def _run(bench: Bench, shape: Shape, boxes: list[BBox], pan: bool) -> dict[str, Any]:
    async with LoadRun(bench, SISCOM, shape, "pan" if pan else "still", moving=True) as run:
        assert run.server is not None
        server = run.server  # the sampler below runs later: mypy narrows names, not attributes
        parent, child = multiprocessing.Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=_pan_process, args=(run.server.port, boxes, pan, child)
        )
        process.start()
        try:
            kind, connected = await asyncio.wait_for(asyncio.to_thread(parent.recv), 120.0)
            before = await run.server.stats()
            lags: list[float] = []

            async def sample() -> None:
                while True:
                    await asyncio.sleep(0.5)
                    try:
                        lags.append(float((await server.stats(timeout=10.0)).get("loop_lag", 0.0)))
                    except (OSError, RuntimeError, ValueError):
                        pass

            sampler = asyncio.ensure_future(sample())
            started = time.monotonic()
            figures = await run.measure(shape.rate)
            seconds = time.monotonic() - started
            sampler.cancel()
            after = await run.server.stats(timeout=30.0)
            parent.send("stop")
            _, sent, frames, closes = await asyncio.wait_for(asyncio.to_thread(parent.recv), 60.0)
        finally:
            process.join(10.0)
            if process.is_alive():
                process.kill()
                process.join()
    return {
        "map_clients": connected,
        "canary_p50_ms": figures.latency_ms["p50"],
        "canary_p99_ms": figures.latency_ms["p99"],
        "shed": after.get("overload_closes", 0) - before.get("overload_closes", 0),
        "map_client_closes": closes,
        "loop_lag_median_ms": statistics.median(lags) if lags else None,
        "loop_lag_max_ms": max(lags) if lags else None,
        "pans_per_s": sent / seconds,
        "map_frames": frames,
        "server_cpu_percent": figures.cpu_percent,
    }


async def pan(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    clients = bench.options.clients or (10 if smoke else 200)
    shape = Shape(
        devices=1_000 if smoke else 10_000,
        clients=1,
        # Enough devices that the canary gets a few frames a second at this rate.
        per_client=50 if smoke else 500,
        rate=bench.options.rate or (50.0 if smoke else 100.0),
        warmup=0.5 if smoke else 3.0,
        duration=2.0 if smoke else (bench.options.seconds or 15.0),
        drain=0.5 if smoke else 2.0,
        client_processes=1,
    )
    boxes = _boxes(clients, bench.options.seed)
    columns = ["pan", "still"]
    result = Result(
        "pan",
        {
            "devices": shape.devices,
            "records/s": shape.rate,
            "map clients": clients,
            "box": f"{BOX_DEGREES} deg",
            "moves/s": MOVES_PER_SECOND,
            "step": f"{STEP_DEGREES} deg",
            "window_s": shape.duration,
        },
        columns,
    )
    cost = pan_cost(shape.devices, clients, 2 if smoke else 10, bench.options.seed)
    runs = {mode: await _run(bench, shape, boxes, mode == "pan") for mode in columns}
    result.figures = {**runs, "in_process": cost}

    def row(label: str, key: str, unit: str, digits: int = 1) -> None:
        result.rows.append(Row(label, {mode: runs[mode][key] for mode in columns}, unit, digits, show_ratio=False))

    row("canary latency p50", "canary_p50_ms", "ms")
    row("canary latency p99", "canary_p99_ms", "ms")
    row("clients shed (overload_closes)", "shed", "", 0)
    row("server loop lag, median of 1 s worsts", "loop_lag_median_ms", "ms")
    row("server loop lag, worst", "loop_lag_max_ms", "ms")
    row("pans sent", "pans_per_s", "/s", 0)
    row("server CPU", "server_cpu_percent", "%")
    result.rows += [
        Row("in process: CPU per pan (core and index)", {"pan": cost["cpu_us_per_pan"]}, "us", 1, show_ratio=False),
        Row("in process: devices checked per pan", {"pan": cost["examined_per_pan"]}, "", 1, show_ratio=False),
        Row(
            "in process: frames per pan (ack, entered, leaves)",
            {"pan": cost["frames_per_pan"]},
            "",
            1,
            show_ratio=False,
        ),
        Row("in process: devices in view per box", {"pan": cost["in_view"]}, "", 0, show_ratio=False),
    ]
    moving = runs["pan"]
    result.verdicts.append(
        Verdict(
            f"{clients} map clients x {MOVES_PER_SECOND:g} moves/s: nobody shed and the canary's p99 <= 250 ms",
            moving["shed"] == 0 and moving["canary_p99_ms"] is not None and moving["canary_p99_ms"] <= 250.0,
            f"{moving['shed']} shed, canary p99 {ms(moving['canary_p99_ms'])}, "
            f"map clients' closes {moving['map_client_closes']}",
        )
    )
    result.notes.append("pan: every map client moves its box 9 times a second; still: the same boxes, unmoved")
    return result


SCENARIO = Scenario("pan", pan, targets=(SISCOM,), order=65)
