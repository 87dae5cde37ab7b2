"""The subscription table: device index, everything-subscribers and snapshot frames."""

from siscom.core.deliveries import Delivery
from siscom.core.subscriptions import SubscriptionTable


class Client:
    def deliver(self, frame):  # pragma: no cover - not called here
        raise AssertionError


def test_subscribers_are_found_by_device_or_as_everything_subscribers():
    table = SubscriptionTable()
    a, b, c = Client(), Client(), Client()
    table.subscribe(a, frozenset({"x", "y"}))
    table.subscribe(b, frozenset({"y"}))
    table.subscribe(c, None)
    named, everything = table.subscribers_of("y")
    assert set(named) == {a, b} and set(everything) == {c}
    named, everything = table.subscribers_of("z")
    assert set(named) == set() and set(everything) == {c}


def test_resubscribing_replaces_the_filter_and_unsubscribing_leaves_no_trace():
    table = SubscriptionTable()
    a = Client()
    table.subscribe(a, frozenset({"x"}))
    table.subscribe(a, frozenset({"y"}))
    assert set(table.subscribers_of("x")[0]) == set()
    table.subscribe(a, None)
    assert set(table.subscribers_of("y")[0]) == set()
    table.unsubscribe(a)
    table.unsubscribe(a)
    assert len(table) == 0 and table.devices_indexed == 0
    assert set(table.subscribers_of("y")[1]) == set()


def test_snapshot_has_the_last_frame_of_each_reporting_device():
    table = SubscriptionTable()
    table.remember(Delivery("x", "x1", False, 0))
    table.remember(Delivery("x", "x2", False, 0))
    table.remember(Delivery("y", "y1", False, 0))
    assert table.snapshot(frozenset({"x", "nobody"})) == [("x", "x2")]
    assert sorted(table.snapshot(None)) == [("x", "x2"), ("y", "y1")]
