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

It runs in process, without a broker or sockets: what it measures is what the index is for, the
routing cost as box clients grow. The end-to-end latency of box clients is not measured here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

from supervisors import Mailbox

from bench.report import Result, Row, Verdict
from bench.scenarios.harness import Bench, Scenario
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

FIELDS = ("GPS_DATETIME", "LATITUD", "LONGITUD", "SPEED")
BOX_DEGREES = 0.005
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
        (_, value), = fleet.step(when, which=[n % devices])
        later.append(delivery(value, when))
    return first, later


def _boxes(count: int, seed: int) -> list[BBox]:
    rng = random.Random(seed)
    lat0, lon0 = QUERETARO
    spread = AREA_RADIUS_M / 111_320.0 * 0.8
    boxes = []
    for _ in range(count):
        lat, lon = lat0 + rng.uniform(-spread, spread), lon0 + rng.uniform(-spread, spread)
        boxes.append(BBox(lon, lat, lon + BOX_DEGREES, lat + BOX_DEGREES))
    return boxes


async def _route(
    first: list[Delivery], later: list[Delivery], boxes: list[BBox], mode: str, fields: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Route ``later`` to one core per box; the router's CPU time and what the cores got."""
    table = SubscriptionTable()
    router = Router(Mailbox(1), table, Metrics())
    await router.receive(first)  # the starting map: every device's first position
    cores: list[StreamCore] = []
    for box in boxes:
        if mode == "bbox":
            core: StreamCore = MapStreamCore(
                None, table=table, policy=POLICY, options=MapOptions(bbox=box, fields=fields), clock=time.monotonic
            )
        else:
            ids = frozenset(d.device_id for d in first if d.position is not None and box.contains(*d.position))
            if fields is None:
                core = StreamCore(ids, table=table, policy=POLICY)
            else:
                core = MapStreamCore(ids, table=table, policy=POLICY, options=MapOptions(fields=fields), clock=time.monotonic)
        core.open(0.0)
        cores.append(core)
    cpu = 0.0
    frames = wire = checked = 0
    for start in range(0, len(later), BATCH):
        batch = later[start:start + BATCH]
        checked += sum(table.viewports.candidates_at(*d.position) for d in batch if d.position is not None)
        began = time.process_time()
        await router.receive(batch)
        cpu += time.process_time() - began
        for core in cores:  # the sessions' part, not timed: take what waits
            while texts := core.take(0.0):
                frames += len(texts)
                wire += sum(map(_wire_bytes, texts))
    return {
        "cpu_us_per_record": 1e6 * cpu / len(later), "deliveries": frames, "wire_bytes": wire,
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
        result.rows.append(Row(
            f"router CPU per record, {count:,} clients",
            {mode: figures[mode][count]["cpu_us_per_record"] for mode in columns}, "us", 2, show_ratio=False,
        ))
    top = counts[-1]
    result.rows += [
        Row(f"deliveries per record, {top:,} clients", {m: figures[m][top]["deliveries"] / n for m in columns}, "", 2),
        Row("bytes/s on the wire, whole records", {m: figures[m][top]["wire_bytes"] / seconds for m in columns}, "B/s", 0),
        Row(f"bytes/s on the wire, fields={','.join(FIELDS)}", {m: figures[m]["fields"]["wire_bytes"] / seconds for m in columns}, "B/s", 0),
    ]
    result.rows.append(Row(
        f"boxes checked per record, {top:,} clients", {"bbox": figures["bbox"][top]["boxes_checked_per_record"]}, "", 2,
    ))
    checked = figures["bbox"][top]["boxes_checked_per_record"]
    delivered = figures["bbox"][top]["deliveries"] / n
    result.verdicts.append(Verdict(
        "no check per box client: boxes checked per record <= 4x the boxes that get it",
        checked <= 4 * max(delivered, 1.0),
        f"{checked:.1f} of {top:,} boxes checked for {delivered:.1f} deliveries per record",
    ))
    share = figures["bbox"][top]["cpu_us_per_record"] * rate / 1e4
    result.verdicts.append(Verdict(
        f"routing to {top:,} box clients at {rate:,} records/s takes <= 10 % of one core",
        share <= 10.0,
        f"{share:.1f} % ({figures['bbox'][top]['cpu_us_per_record']:.1f} us per record; by device_ids "
        f"{figures['device_ids'][top]['cpu_us_per_record']:.1f} us)",
    ))
    saved = 1 - figures["bbox"]["fields"]["wire_bytes"] / max(1, figures["bbox"][top]["wire_bytes"])
    result.notes.append(f"fields={','.join(FIELDS)} saves {100 * saved:.0f} % of the bytes on the wire")
    result.notes.append("in process: the router and the stream cores, no broker and no sockets")
    result.figures = figures
    return result


SCENARIO = Scenario("viewport", viewport, targets=(SISCOM,), order=60)
