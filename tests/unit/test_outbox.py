"""The session outbox: FIFO while the client keeps up, conflating when it falls behind.

The outbox is pure (no event loop): these tests call it directly and need no waiting.
"""

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from siscom.core import cursors
from siscom.core.deliveries import Delivery
from siscom.core.outbox import BURST, Outbox, OutboxFull
from siscom.core.protocol import alert_frame, message_frame


def position(device: str, n: int) -> Delivery:
    return Delivery(device, f"{device}:{n}", False, 0)


def alert(device: str, n: int) -> Delivery:
    return Delivery(device, f"alert {device}:{n}", True, 0)


def take_all(outbox: Outbox) -> list[str]:
    """Everything waiting, over as many takes (chunks) as that needs."""
    texts: list[str] = []
    while len(outbox):
        texts += outbox.take()
    return texts


def test_a_client_that_keeps_up_gets_every_frame_in_order():
    outbox = Outbox(soft_limit=10, max_alerts=10)
    for n in range(5):
        outbox.put_delivery(position("a", n))
    assert outbox.take() == [f"a:{n}" for n in range(5)]
    assert outbox.conflated == 0


def test_a_client_that_falls_behind_gets_the_newest_position_of_each_device():
    outbox = Outbox(soft_limit=4, max_alerts=10)
    for n in range(3):
        outbox.put_delivery(position("a", n))
        outbox.put_delivery(position("b", n))
    texts = outbox.take()
    # Compaction ran when the queue passed 4; later frames arrived after it.
    assert texts[-2:] == ["a:2", "b:2"]
    assert "a:0" not in texts and "b:0" not in texts
    assert outbox.conflated == 6 - len(texts)


def test_alerts_are_never_conflated():
    outbox = Outbox(soft_limit=2, max_alerts=100)
    for n in range(20):
        outbox.put_delivery(alert("a", n))
        outbox.put_delivery(position("a", n))
    texts = take_all(outbox)
    assert [t for t in texts if t.startswith("alert")] == [f"alert a:{n}" for n in range(20)]
    assert "a:19" in texts  # the newest position, where the device first waited
    assert len([t for t in texts if not t.startswith("alert")]) < 20


def test_too_many_waiting_alerts_are_refused():
    outbox = Outbox(soft_limit=10, max_alerts=3)
    for n in range(3):
        outbox.put_delivery(alert("a", n))
    with pytest.raises(OutboxFull):
        outbox.put_delivery(alert("a", 3))
    outbox.take()
    outbox.put_delivery(alert("a", 4))  # taking frees the bound


def test_memory_stays_bounded_by_the_number_of_devices():
    outbox = Outbox(soft_limit=100, max_alerts=10)
    for n in range(100_000):
        outbox.put_delivery(position(f"d{n % 50}", n))
    assert len(outbox) <= 200
    texts = take_all(outbox)
    newest = {t.split(":")[0]: int(t.split(":")[1]) for t in texts}
    assert newest == {f"d{k}": 100_000 - 50 + k for k in range(50)}


def test_take_returns_nothing_when_nothing_waits():
    outbox = Outbox(soft_limit=10, max_alerts=10)
    assert outbox.take() == []


def test_a_waiting_writer_is_woken_once_by_the_next_frame():
    outbox = Outbox(soft_limit=10, max_alerts=10)
    woken: list[int] = []
    outbox.waker = lambda: woken.append(1)
    outbox.put_delivery(position("a", 1))
    outbox.put_delivery(alert("a", 2))
    assert woken == [1]  # once: the waker is forgotten after its call
    assert outbox.waker is None
    assert outbox.take() == ["a:1", "alert a:2"]


def test_a_client_behind_gets_chunks_and_what_waits_keeps_being_refreshed():
    outbox = Outbox(soft_limit=4, max_alerts=10, chunk=3)
    for n in range(10):
        outbox.put_delivery(position(f"d{n}", 0))
    assert outbox.take() == ["d0:0", "d1:0", "d2:0"]
    # While that chunk is written, d3 reports again: it keeps its place, with the newer position.
    outbox.put_delivery(position("d3", 1))
    assert outbox.take() == ["d3:1", "d4:0", "d5:0"]
    assert outbox.conflated == 1


def test_a_client_that_caught_up_gets_every_frame_again():
    outbox = Outbox(soft_limit=2, max_alerts=10)
    for n in range(5):
        outbox.put_delivery(position("a", n))
    assert outbox.take() == ["a:4"]
    for n in range(5, 7):
        outbox.put_delivery(position("a", n))
    assert outbox.take() == ["a:5", "a:6"]


def test_a_client_that_keeps_up_still_gets_at_most_a_chunk_per_take():
    outbox = Outbox(soft_limit=100, max_alerts=10, chunk=4)
    for n in range(10):
        outbox.put_delivery(position("a", n))
    assert outbox.take() == [f"a:{n}" for n in range(4)]
    assert take_all(outbox) == [f"a:{n}" for n in range(4, 10)]
    assert outbox.conflated == 0


@settings(max_examples=400, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["put", "put", "put", "take"]), st.integers(0, 3), st.booleans()), max_size=80
    ),
    cut=st.floats(0, 1),
)
@example(  # behind: d0's slot comes before the alert, and holds a position newer than the alert
    steps=[("put", 0, False), ("put", 1, False), ("put", 2, False), ("put", 3, True), ("put", 0, False)], cut=0.2
)
def test_a_lagging_client_cut_off_anywhere_resumes_with_every_alert_once_and_each_devices_newest_position(steps, cut):
    """The guarantee of docs/protocol.md's Cursors section for a conflated client: resuming from the
    last cursor it got, it has every alert exactly once, and for every device the newest
    position there was (a position may come twice, never go missing)."""
    outbox = Outbox(soft_limit=3, max_alerts=1000, chunk=2)
    routed: list[tuple[int, str, bool]] = []  # (offset, device, alert), one partition
    received: list[str] = []
    for action, device_number, is_alert in steps:
        if action == "take":
            received += outbox.take()
            continue
        offset, device = len(routed), f"d{device_number}"
        routed.append((offset, device, is_alert))
        text = (alert_frame if is_alert else message_frame)(
            json.dumps({"data": {"DEVICE_ID": device, "O": offset}}), cursors.encode(0, ((offset + 1,),))
        )
        outbox.put_delivery(Delivery(device, text, is_alert, 0))
    received += take_all(outbox)
    received = received[: round(cut * len(received))]
    frames = [json.loads(text) for text in received]
    resume_from = cursors.decode(frames[-1]["id"])[1][0][0] if frames else 0
    replayed = [(offset, device, is_alert) for offset, device, is_alert in routed if offset >= resume_from]
    got_alerts = [f["data"]["data"]["O"] for f in frames if f["event"] == "alert"] + [o for o, _, a in replayed if a]
    assert sorted(got_alerts) == [offset for offset, _, is_alert in routed if is_alert]
    got_positions = {f["data"]["data"]["O"] for f in frames if f["event"] == "message"} | {
        o for o, _, a in replayed if not a
    }
    newest = {device: offset for offset, device, is_alert in routed if not is_alert}
    assert set(newest.values()) <= got_positions


def test_a_burst_of_alerts_past_the_bound_is_taken_in_while_the_writer_waited_for_frames():
    outbox = Outbox(soft_limit=10, max_alerts=3)
    outbox.waker = lambda: None  # the client had caught up: its writer waits for frames
    for n in range(3 * 5):
        outbox.put_delivery(alert("a", n))
    assert take_all(outbox) == [f"alert a:{n}" for n in range(15)]


def test_a_burst_goes_past_the_bound_only_up_to_burst_times_it():
    outbox = Outbox(soft_limit=10, max_alerts=3)
    outbox.waker = lambda: None
    for n in range(3 * BURST):
        outbox.put_delivery(alert("a", n))
    with pytest.raises(OutboxFull):
        outbox.put_delivery(alert("a", 99))


def test_once_the_writer_had_its_turn_and_left_alerts_waiting_the_bound_holds():
    outbox = Outbox(soft_limit=100, max_alerts=3, chunk=2)
    outbox.waker = lambda: None
    for n in range(6):
        outbox.put_delivery(alert("a", n))
    assert outbox.take() == ["alert a:0", "alert a:1"]  # its turn: four left, past the bound
    with pytest.raises(OutboxFull):
        outbox.put_delivery(alert("a", 6))


def test_alerts_for_a_writer_that_is_not_waiting_get_no_burst_allowance():
    """A writer stuck on a client that does not read is not waiting for frames: the bound holds."""
    outbox = Outbox(soft_limit=100, max_alerts=3)
    for n in range(3):
        outbox.put_delivery(alert("a", n))
    with pytest.raises(OutboxFull):
        outbox.put_delivery(alert("a", 3))


def test_absorbing_takes_over_what_waits_elsewhere_in_its_order_and_state():
    held = Outbox(soft_limit=2, max_alerts=10)
    for n in range(4):
        held.put_delivery(position(f"d{n % 2}", n))  # past the soft limit: behind, conflating
    held.put_delivery(alert("d0", 9))
    outbox = Outbox(soft_limit=2, max_alerts=10)
    woken: list[int] = []
    outbox.waker = lambda: woken.append(1)
    outbox.absorb(held)
    assert len(held) == 0 and woken == [1] and outbox.behind
    assert take_all(outbox) == ["d0:2", "d1:3", "alert d0:9"]
    assert outbox.conflated == 2
    outbox.put_delivery(position("d0", 1))
    with pytest.raises(ValueError):
        outbox.absorb(held)
