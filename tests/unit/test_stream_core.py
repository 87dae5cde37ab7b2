"""The stream core: one client's subscription, grant, waiting frames and close state, without I/O.

Every test here is synchronous: events go in, the frames to send come out, and time is a number
the test passes, so policy is checked without sleeps or an event loop.
"""

from __future__ import annotations

import json

import pytest

from siscom.core.deliveries import Delivery
from siscom.core.outbox import BURST
from siscom.core.protocol import PING_FRAME, CloseCode, alert_frame, message_frame, resumed_frame
from siscom.core.stream import Cause, StreamCore, StreamPolicy
from siscom.core.subscriptions import SubscriptionTable
from siscom.core.window import RecentWindow
from siscom.security.tokens import Grant

BOUND = 50
GRANTED = frozenset({"bus-1", "bus-2", "bus-3"})
FOREVER = 2.0**40


def policy(**changes) -> StreamPolicy:
    values = dict(keepalive_seconds=60.0, max_pending_frames=BOUND, max_device_ids=10, snapshot=True)
    values.update(changes)
    return StreamPolicy(**values)


def make(device_ids=frozenset({"a", "b"}), *, table=None, grant=None, now=0.0, **changes) -> StreamCore:
    core = StreamCore(
        device_ids, table=SubscriptionTable() if table is None else table, policy=policy(**changes), grant=grant
    )
    core.open(now)
    return core


def position(device_id: str, n: int) -> Delivery:
    return Delivery(device_id, message_frame(json.dumps({"data": {"DEVICE_ID": device_id, "N": n}})), False, 0)


def alert(device_id: str, n: int) -> Delivery:
    return Delivery(device_id, alert_frame(json.dumps({"data": {"DEVICE_ID": device_id, "N": n}})), True, 0)


def drain(core: StreamCore, now: float = 0.0) -> list[dict]:
    """Every frame waiting, as the client would receive them (all chunks)."""
    frames: list[dict] = []
    while texts := core.take(now):
        frames += [json.loads(text) for text in texts]
    return frames


def numbers(frames: list[dict], event: str = "message") -> list[int]:
    return [frame["data"]["data"]["N"] for frame in frames if frame["event"] == event]


def send(core: StreamCore, **message) -> None:
    core.receive(json.dumps(message), 0.0)


# Keep-alives


def test_the_first_keep_alive_is_due_one_interval_after_the_open_and_each_next_one_interval_after_the_last():
    core = make(keepalive_seconds=10.0, now=100.0)
    assert core.wait_time(100.0) == pytest.approx(10.0)
    assert core.take(109.9) == []
    pings = []
    now = 100.0
    for _ in range(5):  # an idle stream: the writer waits as told, then takes
        now += core.wait_time(now)
        texts = core.take(now)
        assert texts == [PING_FRAME]
        pings.append(now)
    gaps = [b - a for a, b in zip([100.0] + pings, pings)]
    assert gaps == pytest.approx([10.0] * 5)


def test_a_keep_alive_taken_late_schedules_the_next_one_an_interval_after_it_was_sent():
    core = make(keepalive_seconds=10.0, now=0.0)
    assert core.take(13.0) == [PING_FRAME]  # the writer was busy: the ping went out at 13
    assert core.wait_time(13.0) == pytest.approx(10.0)
    assert core.next_ping == pytest.approx(23.0)


def test_keep_alives_go_out_on_time_while_frames_flow_too():
    core = make(snapshot=False, keepalive_seconds=1.0)
    core.deliver(position("a", 1), 0.0)
    assert core.take(0.5) == [position("a", 1).text]
    core.deliver(position("a", 2), 0.0)
    assert core.take(1.0) == [position("a", 2).text, PING_FRAME]
    assert core.wait_time(1.0) == pytest.approx(1.0)


def test_frames_waiting_mean_no_wait():
    core = make(snapshot=False)
    core.deliver(position("a", 1), 0.0)
    assert core.wait_time(0.0) == 0.0


# Frames


def test_a_new_stream_gets_the_snapshot_first_then_live_frames_in_order():
    table = SubscriptionTable()
    table.remember(position("a", 0))
    table.remember(position("z", 0))  # not subscribed
    core = make(table=table)
    for n in range(1, 6):
        core.deliver(position("a", n), 0.0)
    assert numbers(drain(core)) == [0, 1, 2, 3, 4, 5]


def test_a_client_that_falls_behind_gets_the_newest_position_per_device_never_reordered():
    core = make(snapshot=False)
    for n in range(10 * BOUND):  # synchronous: the router never waits for a client
        core.deliver(position("a", n), 0.0)
        core.deliver(position("b", n), 0.0)
    frames = drain(core)
    assert numbers(frames)[-2:] == [10 * BOUND - 1] * 2
    assert len(frames) < 10 * BOUND
    for device in "ab":
        mine = [f["data"]["data"]["N"] for f in frames if f["data"]["data"]["DEVICE_ID"] == device]
        assert mine == sorted(mine)
    assert core.take_conflated() == 2 * 10 * BOUND - len(frames)
    assert core.take_conflated() == 0  # counted once


def test_alerts_are_never_conflated_and_past_the_bound_the_client_is_closed_with_1013():
    table = SubscriptionTable()
    core = make(snapshot=False, table=table)
    for n in range(BOUND):
        core.deliver(alert("a", n), 0.0)
    assert core.backlog == BOUND
    assert numbers(drain(core), "alert") == list(range(BOUND))
    for n in range(BOUND + 1):
        core.deliver(alert("a", n), 0.0)
    assert core.closing is not None
    assert (core.closing.code, core.closing.reason, core.closing.cause) == (
        CloseCode.TRY_AGAIN_LATER,
        "client too slow",
        Cause.SLOW_CLIENT,
    )
    assert core.backlog == 0  # what waited is dropped
    core.end()
    assert len(table) == 0


def test_nothing_is_queued_after_the_close():
    core = make(snapshot=False)
    core.close(CloseCode.GOING_AWAY, "server shutting down")
    core.deliver(position("a", 1), 0.0)
    send(core, action="subscribe", device_ids=["c"])
    assert core.take(0.0) == []


# Closing


def test_the_first_close_wins_says_what_to_send_last_and_returns_the_close_once():
    core = make()
    effects = core.close(CloseCode.POLICY_VIOLATION, "token expired", final_frame='{"event":"error"}')
    assert effects is not None and effects.closing is core.closing and effects.refreshes == ()
    assert core.close(CloseCode.GOING_AWAY, "server shutting down") is None
    assert core.client_gone() is None
    assert core.effects() is None, "handed out once"
    closing = core.closing
    assert (closing.code, closing.reason, closing.final_frame, closing.silent) == (
        CloseCode.POLICY_VIOLATION,
        "token expired",
        '{"event":"error"}',
        False,
    )


def test_a_delivery_that_closes_the_stream_rings_the_alarm_and_leaves_the_close_to_collect():
    """The router takes no effects back: a client past its bound is told to its owner by the
    alarm, and the close waits in :meth:`StreamCore.effects`."""
    rung: list[str] = []
    core = make(max_pending_frames=2)
    core.alarm = lambda: rung.append("rung")
    for n in range(100):
        core.deliver(alert("a", n), 0.0)
    assert rung == ["rung"]
    effects = core.effects()
    assert effects is not None and effects.closing is not None and effects.closing.cause is Cause.SLOW_CLIENT


def test_a_client_that_left_is_sent_nothing_more():
    core = make()
    core.client_gone()
    assert core.closing.silent and core.closing.final_frame is None
    assert core.closing.cause is Cause.CLIENT_LEFT


def test_a_going_away_close_counts_as_shutdown():
    core = make()
    core.close(CloseCode.GOING_AWAY, "server shutting down")
    assert core.closing.cause is Cause.SHUTDOWN


def test_ending_leaves_the_table_and_returns_the_conflations_not_yet_counted():
    table = SubscriptionTable()
    core = make(snapshot=False, table=table)
    for n in range(3 * BOUND):
        core.deliver(position("a", n), 0.0)
    core.close(CloseCode.TRY_AGAIN_LATER, "client too slow", cause=Cause.SLOW_CLIENT)
    assert core.end() >= BOUND
    assert len(table) == 0


# Client messages


def test_subscribe_and_unsubscribe_change_the_devices_and_are_acknowledged():
    table = SubscriptionTable()
    table.remember(position("b", 0))
    core = make(frozenset({"a"}), table=table)
    send(core, action="subscribe", device_ids=["b"])
    assert drain(core) == [
        {"event": "ack", "data": {"action": "subscribe", "device_ids": ["a", "b"]}},
        json.loads(position("b", 0).text),  # the snapshot of the device just added
    ]
    assert table.filter_of(core) == {"a", "b"} == core.device_ids
    send(core, action="unsubscribe", device_ids=["a"])
    assert drain(core) == [{"event": "ack", "data": {"action": "unsubscribe", "device_ids": ["b"]}}]
    assert table.filter_of(core) == {"b"}


def test_requests_that_cannot_be_granted_get_an_error_frame_and_the_stream_goes_on():
    table = SubscriptionTable()
    core = make(None, table=table)
    send(core, action="unsubscribe", device_ids=["a"])
    send(core, action="subscribe", device_ids=[f"d{n}" for n in range(11)])
    core.receive("not a command", 0.0)
    frames = drain(core)
    assert [f["event"] for f in frames] == ["error", "error"]
    assert "every device" in frames[0]["data"]["message"]
    core.deliver(position("q", 1), 0.0)
    assert numbers(drain(core)) == [1]
    assert table.filter_of(core) is None
    assert core.closing is None


def test_a_subscription_past_the_device_limit_is_refused_and_the_filter_kept():
    core = make(frozenset({f"d{n}" for n in range(10)}))
    send(core, action="subscribe", device_ids=["d10"])
    frames = drain(core)
    assert frames == [{"event": "error", "data": {"message": "at most 10 device ids per stream"}}]
    assert len(core.device_ids) == 10


def test_too_many_unread_replies_close_the_client_with_1013():
    core = make(None)
    for _ in range(BOUND + 1):
        send(core, action="unsubscribe", device_ids=["a"])  # each answered with an error frame
    assert core.closing.code == CloseCode.TRY_AGAIN_LATER


# The token's grant


def test_subscribing_within_the_grant_is_acknowledged():
    core = make(frozenset({"bus-1"}), grant=Grant(GRANTED, FOREVER), snapshot=False)
    send(core, action="subscribe", device_ids=["bus-2"])
    assert drain(core) == [{"event": "ack", "data": {"action": "subscribe", "device_ids": ["bus-1", "bus-2"]}}]
    assert core.closing is None


def test_subscribing_outside_the_grant_ends_the_stream_with_an_error_frame_and_1008():
    table = SubscriptionTable()
    core = make(frozenset({"bus-1"}), grant=Grant(GRANTED, FOREVER), table=table, snapshot=False)
    effects = core.receive(json.dumps({"action": "subscribe", "device_ids": ["bus-3", "car-9"]}), 0.0)
    closing = core.closing
    assert effects is not None and effects.closing is closing, "the message's answer says to close"
    assert json.loads(closing.final_frame) == {
        "event": "error",
        "data": {"message": "device ids not allowed by the token", "device_ids": ["car-9"]},
    }
    assert (closing.code, closing.reason, closing.cause) == (
        CloseCode.POLICY_VIOLATION,
        "device not allowed",
        Cause.FORBIDDEN,
    )
    assert table.filter_of(core) == {"bus-1"}  # nothing of the request was applied


def test_without_a_grant_any_subscription_is_allowed():
    core = make(frozenset({"bus-1"}), snapshot=False)
    send(core, action="subscribe", device_ids=["car-9"])
    assert drain(core)[0]["event"] == "ack"


@pytest.mark.parametrize("command", [{"action": "unsubscribe", "device_ids": ["bus-1"]}, {"hello": "there"}])
def test_unsubscribing_and_other_messages_are_never_forbidden(command):
    core = make(GRANTED, grant=Grant(GRANTED, FOREVER), snapshot=False)
    core.receive(json.dumps(command), 0.0)
    assert core.closing is None


def test_an_expired_token_closes_with_an_error_frame_and_1008():
    core = make(GRANTED, grant=Grant(GRANTED, 1000.0))
    assert core.expiry_delay(999.5) == pytest.approx(0.5)
    core.token_expired()
    closing = core.closing
    assert json.loads(closing.final_frame) == {"event": "error", "data": {"message": "token expired"}}
    assert (closing.code, closing.reason, closing.cause) == (
        CloseCode.POLICY_VIOLATION,
        "token expired",
        Cause.TOKEN_EXPIRED,
    )


def test_a_token_that_expired_before_the_stream_opened_is_due_at_once():
    core = make(None, grant=Grant(None, 1000.0))
    assert core.expiry_delay(2000.0) == 0.0


def test_without_a_grant_nothing_expires():
    assert make().expiry_delay(0.0) is None


def test_an_expiry_after_the_close_changes_nothing():
    core = make(GRANTED, grant=Grant(GRANTED, 1000.0))
    core.close(CloseCode.NORMAL)
    core.token_expired()
    assert core.closing.cause is Cause.CLOSED


# A snapshot that comes after the stream opened (a process that warmed up once its broker came)


def test_a_stream_opened_cold_gets_the_snapshot_of_its_current_devices_once_the_process_warms():
    table = SubscriptionTable()
    core = make(frozenset({"a", "b"}), table=table)
    assert drain(core) == []  # opened cold: nothing known yet
    send(core, action="subscribe", device_ids=["c"])
    drain(core)
    for device, n in (("a", 1), ("c", 2), ("z", 3)):
        table.remember(position(device, n))
    core.warm_snapshot(0.0)
    assert sorted(numbers(drain(core))) == [1, 2]  # its devices, not z


def test_a_closing_stream_or_one_without_snapshots_gets_no_warm_snapshot():
    table = SubscriptionTable()
    off = make(table=table, snapshot=False)
    closing = make(table=table)
    closing.close(CloseCode.NORMAL)
    table.remember(position("a", 1))
    off.warm_snapshot(0.0)
    closing.warm_snapshot(0.0)
    assert numbers(drain(off)) == [] and len(closing.outbox) == 0


# Replays


def cursored_alert(n: int) -> Delivery:
    return Delivery("a", alert_frame(json.dumps({"data": {"DEVICE_ID": "a", "N": n}}), f"c{n}"), True, 0)


def test_a_replay_is_queued_a_slice_at_a_time_as_the_client_takes_it_then_what_was_routed_meanwhile():
    """Ten times the bound of waiting alerts, replayed: none refused, none twice, the outbox never
    holding more than a slice; live deliveries (handed over, then routed) follow the replay."""
    core = StreamCore(frozenset({"a"}), table=SubscriptionTable(), policy=policy(max_pending_frames=10))
    core.open(
        0.0,
        resumed=resumed_frame(True),
        replay=[cursored_alert(n) for n in range(100)],
        cursor="c",
        live=[alert("a", 1000)],
    )
    core.deliver(alert("a", 2000), 0.0)
    core.deliver(position("a", 3000), 0.0)
    frames: list[dict] = []
    for _ in range(1000):
        if not (texts := core.take(0.0)) and core.wait_time(0.0) > 0:
            break
        assert len(core.outbox) <= 10 // 2
        frames += [json.loads(text) for text in texts]
    assert core.closing is None
    assert frames[0]["event"] == "resumed"
    assert numbers(frames, "alert") == [*range(100), 1000, 2000]
    assert numbers(frames) == [3000]
    core.deliver(position("a", 4000), 0.0)  # the replay is out: live frames go straight to the outbox
    assert numbers(drain(core)) == [4000]


def test_a_ping_during_a_replay_names_where_the_client_stands_not_the_live_stream():
    window = RecentWindow(10, 10**6)
    window.dispatched = "live"
    core = StreamCore(frozenset({"a"}), table=SubscriptionTable(), policy=policy(max_pending_frames=4), window=window)
    core.open(0.0, replay=[cursored_alert(n) for n in range(20)], cursor="start")
    pinged = [json.loads(text) for text in core.take(100.0) if '"ping"' in text]
    assert [frame["id"] for frame in pinged] == ["c1"]  # the last replayed frame taken


def test_alerts_routed_during_a_replay_wait_as_a_burst_then_past_it_the_client_is_closed_1013():
    """The client has had no turn for what is routed while its replay goes out: up to BURST times
    the bound of waiting alerts may wait; one more, and it is too slow."""
    core = StreamCore(frozenset({"a"}), table=SubscriptionTable(), policy=policy(max_pending_frames=4))
    core.open(0.0, replay=[cursored_alert(n) for n in range(20)], cursor="start")
    for n in range(4 * BURST):
        core.deliver(alert("a", n), 0.0)
    assert core.closing is None
    core.deliver(alert("a", 99), 0.0)
    assert core.closing is not None and core.closing.cause is Cause.SLOW_CLIENT
    assert core.backlog == 0


# What the client sends before the stream opens (while its replay is waited for)


def test_messages_sent_before_the_opening_are_applied_after_it_in_order_and_subscribe_nothing_before():
    from siscom.core.protocol import resumed_frame

    table = SubscriptionTable()
    core = StreamCore(frozenset({"a"}), table=table, policy=policy())
    send(core, action="subscribe", device_ids=["b"])
    send(core, action="unsubscribe", device_ids=["a"])
    with pytest.raises(KeyError):
        table.filter_of(core)  # not in the table before the opening: live cannot overtake the replay
    assert core.backlog == 0, "nothing answered before the opening"
    core.open(0.0, resumed=resumed_frame(True), replay=[position("a", 1)], cursor=None)
    assert drain(core) == [
        {"event": "resumed", "data": {"recovered": True}},
        json.loads(position("a", 1).text),
        {"event": "ack", "data": {"action": "subscribe", "device_ids": ["a", "b"]}},
        {"event": "ack", "data": {"action": "unsubscribe", "device_ids": ["b"]}},
    ]
    assert table.filter_of(core) == {"b"}


def test_before_the_opening_messages_count_against_the_allowance_and_a_bounded_few_are_kept():
    from siscom.core.stream import HELD_BYTES, HELD_MESSAGES
    from siscom.security.inbound import InboundLimits, InboundRates

    def waiting(burst: int) -> StreamCore:
        inbound = InboundLimits(InboundRates(1.0, burst, 0.0, 1), 0.0)
        return StreamCore(frozenset({"a"}), table=SubscriptionTable(), policy=policy(), inbound=inbound)

    over_allowance = waiting(burst=3)
    for _ in range(4):  # the burst, then one past it: as after the opening
        over_allowance.receive("{}", 0.0)
    assert over_allowance.closing is not None and over_allowance.closing.cause is Cause.TOO_MANY_MESSAGES
    assert over_allowance.closing.code == CloseCode.POLICY_VIOLATION

    over_count = waiting(burst=1000)
    for _ in range(HELD_MESSAGES):
        over_count.receive("{}", 0.0)
    assert over_count.closing is None
    over_count.receive("{}", 0.0)
    assert over_count.closing is not None and over_count.closing.cause is Cause.TOO_MANY_MESSAGES

    over_bytes = waiting(burst=1000)
    big = "x" * (64 * 1024)
    for _ in range(HELD_BYTES // len(big)):
        over_bytes.receive(big, 0.0)
    assert over_bytes.closing is None
    over_bytes.receive(big, 0.0)
    assert over_bytes.closing is not None and over_bytes.closing.cause is Cause.TOO_MANY_MESSAGES


# The snapshot: shared frames, taken a chunk at a time


def test_a_large_snapshot_is_the_tables_frames_shared_by_every_stream_without_their_cursors():
    from siscom.core.protocol import resumed_frame
    from siscom.core.stream import SNAPSHOT_CHUNK

    table = SubscriptionTable()
    devices = [f"bus-{n}" for n in range(SNAPSHOT_CHUNK * 3 + 5)]
    for n, device in enumerate(devices):
        table.remember(
            Delivery(device, message_frame(json.dumps({"data": {"DEVICE_ID": device, "N": n}}), "CURSOR"), False, 0)
        )
    cores = [StreamCore(None, table=table, policy=policy()) for _ in range(2)]
    taken = []
    for core in cores:
        core.open(0.0, resumed=resumed_frame(False, "why"))
        chunks = []
        while texts := core.take(0.0):
            chunks.append(texts)
        taken.append(chunks)
    first, second = taken
    assert [len(chunk) for chunk in first] == [1, SNAPSHOT_CHUNK, SNAPSHOT_CHUNK, SNAPSHOT_CHUNK, 5], (
        "resumed, then chunks"
    )
    frames = [text for chunk in first[1:] for text in chunk]
    assert [json.loads(text)["data"]["data"]["N"] for text in frames] == list(range(len(devices)))
    assert all('"id"' not in text for text in frames), "a snapshot frame says where a device is, not the stream"
    others = [text for chunk in second[1:] for text in chunk]
    assert all(a is b for a, b in zip(frames, others)), "one frame per device for every stream"


def test_the_last_frame_of_an_opening_snapshot_carries_the_cursor_of_the_opening_and_live_follows_it():
    from siscom.core.window import RecentWindow

    table = SubscriptionTable()
    window = RecentWindow(100, 10**6)
    window.dispatched = "OPENED"
    for device in ("a", "b"):
        table.remember(position(device, 0))
    core = StreamCore(frozenset({"a", "b"}), table=table, policy=policy(), window=window)
    core.open(0.0)
    window.dispatched = "LATER"
    newer = Delivery("a", message_frame(json.dumps({"data": {"DEVICE_ID": "a", "N": 1}}), "LATER"), False, 0)
    table.remember(newer)
    core.deliver(newer, 0.0)  # routed while the snapshot waits
    ping_during = core.take(100.0)  # a keep-alive due with the snapshot's first frames
    # Where the client stands once these are out: the opening, not past the live frame still waiting.
    assert json.loads(ping_during[-1])["id"] == "OPENED"
    frames = [json.loads(text) for text in ping_during[:-1]] + drain(core, 100.0)
    seen = [(f["data"]["data"]["DEVICE_ID"], f["data"]["data"]["N"], f.get("id")) for f in frames]
    snapshot, live = seen[:2], seen[2:]
    # The newest position of a when taken (never an older one after a newer), in any device order;
    # only the snapshot's last frame has an id, the opening's.
    assert sorted((device, n) for device, n, _ in snapshot) == [("a", 1), ("b", 0)]
    assert [cursor for _, _, cursor in snapshot] == [None, "OPENED"]
    assert live == [("a", 1, "LATER")]


def test_devices_subscribed_during_a_replay_get_their_snapshot_after_it_not_in_its_middle():
    """A subscription change waits for the replay to be out (its answer and its snapshot would
    overtake replayed frames): a client cut off just after them would resume past the rest of
    its replay."""
    table = SubscriptionTable()
    table.remember(position("b", 77))
    core = StreamCore(frozenset({"a"}), table=table, policy=policy(max_pending_frames=4))
    core.open(0.0, replay=[cursored_alert(n) for n in range(10)], cursor="start")
    assert [json.loads(text)["event"] for text in core.take(0.0)] == ["alert", "alert"]
    send(core, action="subscribe", device_ids=["b"])
    frames = []
    for _ in range(100):
        if not (texts := core.take(0.0)) and core.wait_time(0.0) > 0:
            break
        frames += [json.loads(text) for text in texts]
    assert [f["event"] for f in frames] == ["alert"] * 8 + ["ack", "message"]
    assert numbers(frames) == [77]
