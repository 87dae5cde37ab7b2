"""The subscription table: device index, everything-subscribers and snapshot frames."""

from siscom.core.deliveries import Delivery
from siscom.core.subscriptions import SubscriptionTable


class Client:
    def deliver(self, frame, now):  # pragma: no cover - not called here
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


def test_a_device_keeps_its_subscribers_from_one_to_many_and_back_to_none():
    table = SubscriptionTable()
    clients = [Client() for _ in range(20)]
    for client in clients:
        table.subscribe(client, frozenset({"x"}))
    assert set(table.subscribers_of("x")[0]) == set(clients)
    for client in clients[:15]:
        table.unsubscribe(client)
    assert set(table.subscribers_of("x")[0]) == set(clients[15:])
    for client in clients[15:]:
        table.unsubscribe(client)
    assert table.devices_indexed == 0 and table.subscribed_ids == 0


def test_equal_filters_share_one_frozenset_until_the_last_holder_leaves():
    table = SubscriptionTable()
    a, b = Client(), Client()
    table.subscribe(a, frozenset({"x", "y"}))
    table.subscribe(b, frozenset({"y", "x"}))
    assert table.filter_of(a) is table.filter_of(b)
    assert table.canonical(frozenset({"x", "y"})) is table.filter_of(a)
    table.unsubscribe(a)
    table.unsubscribe(b)
    fresh = frozenset({"x", "y"})
    assert table.canonical(fresh) is fresh


def test_past_its_bound_the_table_refuses_a_filter_and_keeps_the_earlier_one():
    import pytest

    from siscom.core.subscriptions import SubscriptionLimit

    table = SubscriptionTable(max_ids=3)
    a, b = Client(), Client()
    table.subscribe(a, frozenset({"x", "y"}))
    table.subscribe(b, None)  # every device counts as one
    with pytest.raises(SubscriptionLimit):
        table.subscribe(b, frozenset({"p", "q"}))
    assert table.filter_of(b) is None and table.subscribed_ids == 3
    table.subscribe(a, frozenset({"z"}))  # replacing a filter frees what it held
    table.subscribe(b, frozenset({"p", "q"}))
    assert table.subscribed_ids == 3
