"""``viewport``: map clients with small boxes over a moving fleet, against the same clients by
``device_ids``.

10,000 simulated vehicles (the brief's record shape, ``siscom.dev.simulator``) report in turn at
2,000 records/s for 10 s of simulated time; the gateway's own router (``siscom.pipeline.router``)
routes the decoded records, in batches of 100, to 0, 100 and 2,000 stream cores: once with a small
box each (about 550 m square, somewhere in the fleet's area), once subscribed by ``device_ids`` to
the devices in that box at the start. Printed: the router's CPU time per record (stream cores'
outboxes included, nothing written to sockets), deliveries per record, and the bytes per second
those deliveries put on the wire (each frame's text plus its WebSocket header), with and without
``fields=LATITUD,LONGITUD,SPEED,GPS_DATETIME``.

The in-process part runs without a broker or sockets: what it measures is what the index is for,
the routing cost as box clients grow. Its wide part routes 1,000 records of 1,000 devices to 1,000
and 2,000 clients of the world box, and to as many clients of every device (no box), three runs of
each in turn: the median router CPU per record of each is printed side by side. Then the CPU
time of a world-box client's join (its snapshot queued) over 2,000 parked devices, before and
after 500 such clients came and went.

The end-to-end part runs the gateway (``siscom serve``) on the broker, with the bench producer
sending the simulator's tracks at 2,000 records/s over 10,000 moving devices, and 1,000 WebSocket
clients (``--clients``; 2,000 saturated the shared 2-core machine it was written on) spread over
client processes, with a small box each; then the same with every client
subscribed by ``device_ids`` to the devices in its box at the start. A box client's deliveries
offered are the records whose position is in its box (``leave`` frames are extra: counted apart,
not as deliveries). Boxes with no device at the start are skipped, so that every ``device_ids``
client has a device. Printed side by side: deliveries offered and delivered, the delivery ratio,
latency, and the server's CPU per delivery.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench.clients import Subscription
from bench.producer import FixedRateProducer
from bench.report import Result, Row, Verdict
from bench.scenarios.harness import Bench, Scenario, Shape, ms
from bench.scenarios.load import LoadFigures, LoadRun
from bench.servers import SISCOM, Target
from siscom.core.deliveries import Delivery
from siscom.core.geo import BBox
from siscom.core.mapoptions import MapOptions
from siscom.core.mapstream import MapStreamCore
from siscom.core.protocol import message_frame
from siscom.core.records import decode_value
from siscom.core.stream import StreamCore, StreamPolicy
from siscom.core.subscriptions import SubscriptionTable
from siscom.dev.simulator import AREA_RADIUS_M, QUERETARO, FleetSimulator
from siscom.metrics import Metrics
from siscom.pipeline.router import Router
from supervisors import Mailbox

FIELDS = ("GPS_DATETIME", "LATITUD", "LONGITUD", "SPEED")
BOX_DEGREES = 0.005
#: A box over the whole map: routing to it must cost what a subscription to every device does.
WORLD = BBox(-180.0, -90.0, 180.0, 90.0)
#: The wide part: clients of the world box beside clients of every device, on a smaller fleet
#: (each record goes to every client: 1,000 records to 2,000 clients are 2 million deliveries).
WIDE_DEVICES = 1_000
WIDE_RECORDS = 1_000
WIDE_COUNTS = (1_000, 2_000)
#: Runs of each, in turn; the median is shown.
REPEATS = 3
#: Joins measured over parked devices (that never report again) before and after this many box
#: clients came and went.
JOIN_PARKED = 2_000
JOIN_DEPARTED = 500
BATCH = 100
POLICY = StreamPolicy(keepalive_seconds=3600.0, max_pending_frames=100_000, max_device_ids=100_000, snapshot=False)


def _wire_bytes(text: str) -> int:
    """A server frame on the wire: payload plus the RFC 6455 header (server frames are unmasked)."""
    size = len(text.encode())
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


def _records(devices: int, rate: int, seconds: float, seed: int) -> tuple[list[Delivery], list[Delivery]]:
    """The fleet's first report of every device (the starting map), then ``rate * seconds``
    reports, round-robin over the devices, as the decoder would hand them on."""
    fleet = FleetSimulator(devices, seed=seed)
    start = 1_800_000_000.0

    def delivery(value: bytes, when: float) -> Delivery:
        decoded = decode_value(value, max_bytes=1 << 20)
        return Delivery(decoded.device_id, message_frame(decoded.text), False, int(when * 1000), decoded.position)

    first = [delivery(value, start) for _, value in fleet.step(start)]
    later = []
    for n in range(int(rate * seconds)):
        when = start + 1 + n / rate
        ((_, value),) = fleet.step(when, which=[n % devices])
        later.append(delivery(value, when))
    return first, later


def scattered(count: int, seed: int, share: float) -> list[tuple[float, float]]:
    """``count`` points (lat, lon) drawn evenly around the simulated city, at most ``share`` of its
    radius from its centre on each axis; the same ones for the same seed."""
    rng = random.Random(seed)
    lat0, lon0 = QUERETARO
    spread = AREA_RADIUS_M / 111_320.0 * share
    return [(lat0 + rng.uniform(-spread, spread), lon0 + rng.uniform(-spread, spread)) for _ in range(count)]


def _boxes(count: int, seed: int) -> list[BBox]:
    return [BBox(lon, lat, lon + BOX_DEGREES, lat + BOX_DEGREES) for lat, lon in scattered(count, seed, 0.8)]


async def _route(
    first: list[Delivery], later: list[Delivery], boxes: list[BBox], mode: str, fields: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Route ``later`` to one core per box; the router's CPU time and what the cores got."""
    table = SubscriptionTable()
    router = Router(Mailbox(1), table, Metrics())
    await router.receive(first)  # the starting map: every device's first position
    cores: list[StreamCore] = []
    for box in boxes:
        if mode == "world":
            core: StreamCore = MapStreamCore(None, table=table, policy=POLICY, options=MapOptions(bbox=WORLD))
        elif mode == "every":
            core = StreamCore(None, table=table, policy=POLICY)
        elif mode == "bbox":
            core = MapStreamCore(None, table=table, policy=POLICY, options=MapOptions(bbox=box, fields=fields))
        else:
            ids = frozenset(d.device_id for d in first if d.position is not None and box.contains(*d.position))
            if fields is None:
                core = StreamCore(ids, table=table, policy=POLICY)
            else:
                core = MapStreamCore(ids, table=table, policy=POLICY, options=MapOptions(fields=fields))
        core.open(0.0)
        cores.append(core)
    cpu = 0.0
    frames = wire = checked = 0
    for start in range(0, len(later), BATCH):
        batch = later[start : start + BATCH]
        checked += sum(table.viewports.candidates_at(*d.position) for d in batch if d.position is not None)
        began = time.process_time()
        await router.receive(batch)
        cpu += time.process_time() - began
        for core in cores:  # the sessions' part, not timed: take what waits
            while texts := core.take(0.0):
                frames += len(texts)
                wire += sum(map(_wire_bytes, texts))
    return {
        "cpu_us_per_record": 1e6 * cpu / len(later),
        "deliveries": frames,
        "wire_bytes": wire,
        "boxes_checked_per_record": checked / len(later),
    }


async def viewport(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    devices = 500 if smoke else 10_000
    rate = 500 if smoke else 2_000
    seconds = 1.0 if smoke else 10.0
    counts = (0, 10, 50) if smoke else (0, 100, 2_000)
    first, later = _records(devices, rate, seconds, bench.options.seed)
    boxes = _boxes(counts[-1], bench.options.seed)
    columns = ["bbox", "device_ids"]
    result = Result(
        "viewport",
        {"devices": devices, "records/s": rate, "seconds": seconds, "box": f"{BOX_DEGREES} deg", "batch": BATCH},
        columns,
    )
    figures: dict[str, Any] = {mode: {} for mode in columns}
    for count in counts:
        for mode in columns:
            figures[mode][count] = await _route(first, later, boxes[:count], mode)
    for mode in columns:
        figures[mode]["fields"] = await _route(first, later, boxes, mode, FIELDS)
    n = len(later)
    for count in counts:
        result.rows.append(
            Row(
                f"router CPU per record, {count:,} clients",
                {mode: figures[mode][count]["cpu_us_per_record"] for mode in columns},
                "us",
                2,
                show_ratio=False,
            )
        )
    top = counts[-1]
    result.rows += [
        Row(f"deliveries per record, {top:,} clients", {m: figures[m][top]["deliveries"] / n for m in columns}, "", 2),
        Row(
            "bytes/s on the wire, whole records",
            {m: figures[m][top]["wire_bytes"] / seconds for m in columns},
            "B/s",
            0,
        ),
        Row(
            f"bytes/s on the wire, fields={','.join(FIELDS)}",
            {m: figures[m]["fields"]["wire_bytes"] / seconds for m in columns},
            "B/s",
            0,
        ),
    ]
    result.rows.append(
        Row(
            f"boxes checked per record, {top:,} clients",
            {"bbox": figures["bbox"][top]["boxes_checked_per_record"]},
            "",
            2,
        )
    )
    checked = figures["bbox"][top]["boxes_checked_per_record"]
    delivered = figures["bbox"][top]["deliveries"] / n
    result.verdicts.append(
        Verdict(
            "no check per box client: boxes checked per record <= 4x the boxes that get it",
            checked <= 4 * max(delivered, 1.0),
            f"{checked:.1f} of {top:,} boxes checked for {delivered:.1f} deliveries per record",
        )
    )
    share = figures["bbox"][top]["cpu_us_per_record"] * rate / 1e4
    result.verdicts.append(
        Verdict(
            f"routing to {top:,} box clients at {rate:,} records/s takes <= 10 % of one core",
            share <= 10.0,
            f"{share:.1f} % ({figures['bbox'][top]['cpu_us_per_record']:.1f} us per record; by device_ids "
            f"{figures['device_ids'][top]['cpu_us_per_record']:.1f} us)",
        )
    )
    await _wide(bench, result, figures)
    saved = 1 - figures["bbox"]["fields"]["wire_bytes"] / max(1, figures["bbox"][top]["wire_bytes"])
    result.notes.append(f"fields={','.join(FIELDS)} saves {100 * saved:.0f} % of the bytes on the wire")
    result.notes.append("in process: the router and the stream cores, no broker and no sockets")
    result.figures = figures
    await _end_to_end(bench, result, figures)
    return result


async def wide_figures(counts: Sequence[int], devices: int, records: int, seed: int) -> dict[str, dict[int, float]]:
    """Router CPU per record (median of the runs) for ``counts`` world-box clients and as many
    clients of every device, over ``devices`` devices reporting ``records`` times in turn."""
    first, later = _records(devices, records, 1.0, seed)
    runs: dict[str, dict[int, list[float]]] = {"world": {}, "every": {}}
    for _ in range(REPEATS):  # in turn, so that the machine's noise falls on both alike
        for count in counts:
            for mode, by_count in runs.items():
                figures = await _route(first, later, [WORLD] * count, mode)
                by_count.setdefault(count, []).append(figures["cpu_us_per_record"])
    return {mode: {count: statistics.median(cpu) for count, cpu in by_count.items()} for mode, by_count in runs.items()}


def join_cost(parked: int, departed: int, joins: int, seed: int) -> dict[str, float]:
    """CPU time of a world-box client's join (subscribe and snapshot queued, as at a handshake)
    over ``parked`` devices that never report again, before and after ``departed`` such clients
    came and went, beside one that stays."""
    first, _ = _records(parked, 1, 1.0, seed)
    table = SubscriptionTable()
    for delivery in first:
        table.remember(delivery)
    policy = StreamPolicy(keepalive_seconds=3600.0, max_pending_frames=100_000, max_device_ids=100_000, snapshot=True)

    def client() -> MapStreamCore:
        return MapStreamCore(None, table=table, policy=policy, options=MapOptions(bbox=WORLD))

    def timed_joins() -> float:
        cpu = 0.0
        for _ in range(joins):
            core = client()
            began = time.process_time()
            core.open(0.0)
            cpu += time.process_time() - began
            core.end()
        return 1e6 * cpu / joins

    keeper = client()
    keeper.open(0.0)
    before = timed_joins()
    for _ in range(departed):
        core = client()
        core.open(0.0)
        core.end()
    after = timed_joins()
    keeper.end()
    return {"before_us": before, "after_us": after}


async def _wide(bench: Bench, result: Result, figures: dict[str, Any]) -> None:
    """Boxes larger than any cell of the index (here the world) against every-device clients."""
    smoke = bench.options.smoke
    counts = (10, 20) if smoke else WIDE_COUNTS
    wide = await wide_figures(
        counts, 100 if smoke else WIDE_DEVICES, 100 if smoke else WIDE_RECORDS, bench.options.seed
    )
    figures["wide"] = wide
    for count in counts:
        result.rows.append(
            Row(
                f"router CPU per record, {count:,} clients of the world box (bbox) or every device (device_ids)",
                {"bbox": wide["world"][count], "device_ids": wide["every"][count]},
                "us",
                0,
                show_ratio=False,
            )
        )
    departed = 20 if smoke else JOIN_DEPARTED
    joins = join_cost(100 if smoke else JOIN_PARKED, departed, 5 if smoke else 50, bench.options.seed)
    figures["join"] = joins
    parked = 100 if smoke else JOIN_PARKED
    for when, key in (("before", "before_us"), (f"after {departed:,} such clients came and went", "after_us")):
        result.rows.append(
            Row(
                f"CPU per world-box join over {parked:,} parked devices, {when}",
                {"bbox": joins[key]},
                "us",
                0,
                show_ratio=False,
            )
        )
    result.verdicts.append(
        Verdict(
            "a join costs no more after box clients came and went (within 1.5x)",
            joins["after_us"] <= 1.5 * joins["before_us"],
            f"{joins['before_us']:,.0f} us before, {joins['after_us']:,.0f} us after",
        )
    )
    top = counts[-1]
    ratio = wide["world"][top] / max(wide["every"][top], 1e-9)
    result.verdicts.append(
        Verdict(
            f"{top:,} world-box clients cost at most 1.5x what {top:,} clients of every device cost",
            ratio <= 1.5,
            f"{ratio:.2f}x ({wide['world'][top]:,.0f} us against {wide['every'][top]:,.0f} us per record)",
        )
    )


def _in_box_at_start(producer: FixedRateProducer, box: BBox) -> tuple[str, ...]:
    return tuple(sorted(d for d, position in producer.start_positions.items() if box.contains(*position)))


def _chosen_boxes(producer: FixedRateProducer, clients: int, box_degrees: float, seed: int) -> list[BBox]:
    """The first ``clients`` boxes with a device in them at the start, of the same random boxes the
    in-process part uses (scaled to ``box_degrees``)."""
    chosen = []
    for box in _boxes(4 * clients, seed):
        box = BBox(box.min_lon, box.min_lat, box.min_lon + box_degrees, box.min_lat + box_degrees)
        if _in_box_at_start(producer, box):
            chosen.append(box)
            if len(chosen) == clients:
                return chosen
    raise RuntimeError(f"only {len(chosen)} of {4 * clients} boxes hold a device at the start")


async def _end_to_end(bench: Bench, result: Result, figures: dict[str, Any]) -> None:
    """The gateway served over sockets: box clients, then the same clients by ``device_ids``."""
    smoke = bench.options.smoke
    shape = Shape(
        devices=500 if smoke else 10_000,
        clients=bench.options.clients or (20 if smoke else 1_000),
        per_client=None,
        rate=bench.options.rate or (300.0 if smoke else 2_000.0),
        warmup=0.5 if smoke else 3.0,
        duration=1.5 if smoke else 10.0,
        drain=0.5 if smoke else 2.0,
        client_processes=2 if smoke else 3,
    )
    # The smoke fleet is sparse: a bigger box keeps a few devices in each.
    box_degrees = 0.02 if smoke else BOX_DEGREES
    boxes: list[BBox] = []

    def by_box(producer: FixedRateProducer) -> list[Subscription]:
        boxes[:] = _chosen_boxes(producer, shape.clients, box_degrees, bench.options.seed)
        return list(boxes)

    def by_ids(producer: FixedRateProducer) -> list[Subscription]:
        return [
            _in_box_at_start(producer, box)
            for box in _chosen_boxes(producer, shape.clients, box_degrees, bench.options.seed)
        ]

    runs: dict[str, LoadFigures] = {}
    for mode, subscribe in (("bbox", by_box), ("device_ids", by_ids)):
        async with LoadRun(bench, SISCOM, shape, f"viewport-{mode}", moving=True, subscribe=subscribe) as run:
            runs[mode] = await run.measure(shape.rate)
            figures[mode]["end_to_end"] = asdict(runs[mode])
    label = f"end to end, {shape.clients:,} clients"
    result.params.update(
        {
            "end_to_end_clients": shape.clients,
            "end_to_end_devices": shape.devices,
            "end_to_end_box": f"{box_degrees} deg",
        }
    )

    def row(name: str, unit: str, pick: Any, digits: int = 1, show_ratio: bool = True) -> None:
        result.rows.append(Row(f"{label}: {name}", {m: pick(f) for m, f in runs.items()}, unit, digits, show_ratio))

    row("records produced", "rec/s", lambda f: f.offered_records_s)
    row("deliveries offered", "", lambda f: f.expected, 0)
    row("delivered", "", lambda f: f.delivered, 0)
    row("delivery ratio", "", lambda f: f.delivery_ratio, 4)
    row("latency p50", "ms", lambda f: f.latency_ms["p50"])
    row("latency p99", "ms", lambda f: f.latency_ms["p99"])
    row("worst client p99", "ms", lambda f: f.worst_client_p99_ms)
    row("server CPU", "%", lambda f: f.cpu_percent)
    row("server CPU per delivery", "us", lambda f: f.cpu_us_per_delivery)
    row("leave frames and acks received", "", lambda f: f.other_frames, 0, False)
    box, ids = runs["bbox"], runs["device_ids"]
    result.verdicts.append(
        Verdict(
            f"{shape.clients:,} box clients over {shape.devices:,} moving devices at {shape.rate:,.0f} rec/s: "
            "delivery ratio >= 0.999 and p99 <= 100 ms, as by device_ids",
            box.sustained(100.0) and ids.sustained(100.0),
            f"bbox {box.delivery_ratio:.4f}, p99 {ms(box.latency_ms['p99'])}; "
            f"device_ids {ids.delivery_ratio:.4f}, p99 {ms(ids.latency_ms['p99'])}",
        )
    )
    result.notes.append(
        f"end to end: the gateway, the broker and {shape.clients:,} WebSocket clients in "
        f"{shape.client_processes} processes; box clients' deliveries offered are the records whose "
        "position is in their box; by device_ids, the devices in the box at the start"
    )


SCENARIO = Scenario("viewport", viewport, targets=(SISCOM,), order=60)
