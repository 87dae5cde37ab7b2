"""The Prometheus names come from the registry; the access rule is one setting, checked at start."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run as a script from anywhere
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from support.settings import error_for, load  # noqa: E402

from siscom.metrics import Kind, Metric, Metrics  # noqa: E402
from siscom.prometheus import GAUGE_ACROSS_WORKERS, LATENCY_BUCKETS, exposed_name, prometheus_table  # noqa: E402

METRICS_DOC = REPO_ROOT / "docs" / "metrics.md"
SECRET = "s" * 40


def samples(metrics: Metrics) -> dict[str, float]:
    body, _ = metrics.prometheus.exposition()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if "le" not in sample.labels
    }


def test_the_metrics_doc_prometheus_table_is_generated_from_the_registry():
    """Regenerate with `python tests/unit/test_prometheus.py` after changing the registry."""
    assert prometheus_table() in METRICS_DOC.read_text()


def test_every_gauge_says_how_it_combines_over_workers():
    assert set(GAUGE_ACROSS_WORKERS) == {m for m in Metric if m.kind is Kind.GAUGE}


def test_every_metric_of_the_registry_is_exposed_under_the_prefix_from_the_start():
    exposed = samples(Metrics())
    for metric in Metric:
        name = exposed_name(metric) + ("_count" if metric.kind is Kind.TIMER else "")
        assert exposed[name] == 0, metric
    assert all(name.startswith("siscom_") for name in exposed)


def test_counts_reach_the_exposition_and_latency_is_observed_in_seconds():
    metrics = Metrics()
    metrics.incr(Metric.RECORDS, 7)
    metrics.gauge(Metric.PARTITION_LAG, 12)
    metrics.timing(Metric.LATENCY, 30)
    exposed = samples(metrics)
    assert exposed["siscom_records_total"] == 7
    assert exposed["siscom_partition_lag"] == 12
    assert exposed["siscom_latency_seconds_sum"] == 0.03


def test_two_gateways_in_one_process_keep_separate_counts():
    """No registry is global: tests and embedders may run several gateways in one process."""
    first, second = Metrics(), Metrics()
    first.incr(Metric.RECORDS, 3)
    assert samples(second)["siscom_records_total"] == 0


def test_latency_buckets_run_from_5_ms_to_10_s():
    assert LATENCY_BUCKETS[0] == 0.005 and LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))


def test_metrics_access_follows_the_stats_by_default():
    assert load().metrics_access == "auto" and not load().metrics_need_token
    assert load(STREAM_JWT_SECRET=SECRET).metrics_need_token
    assert not load(STREAM_JWT_SECRET=SECRET, METRICS_ACCESS="open").metrics_need_token
    assert load(STREAM_JWT_SECRET=SECRET, METRICS_ACCESS="Token").metrics_need_token


def test_metrics_access_token_without_a_key_stops_the_start():
    error = error_for(METRICS_ACCESS="token")
    assert error.variable == "METRICS_ACCESS" and "STREAM_JWT_SECRET" in str(error)
    assert error_for(METRICS_ACCESS="private").variable == "METRICS_ACCESS"


def test_metrics_bind_is_a_host_and_port():
    assert load().metrics_port is None
    assert load(METRICS_BIND="0.0.0.0:9100").metrics_port == 9100
    assert load(METRICS_BIND="[::1]:9100").metrics_port == 9100
    for bad in ("9100", "0.0.0.0:0", "host:99999", "http://x:1"):
        assert error_for(METRICS_BIND=bad).variable == "METRICS_BIND", bad


def _rewrite_doc() -> None:
    text = METRICS_DOC.read_text()
    start = text.index("| Prometheus metric | type (over workers) |")
    end = text.index("\n\n", start) + 1
    METRICS_DOC.write_text(text[:start] + prometheus_table() + text[end:])


if __name__ == "__main__":
    _rewrite_doc()
