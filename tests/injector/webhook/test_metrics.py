"""The webhook's plain counts render as prometheus_client's own Counter and Histogram would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from injector.webhook import metrics
from injector.webhook.metrics import WebhookMetrics

RECORDED = [("injected", 0.00007), ("injected", 0.0001), ("injected", 0.0003),
            ("skipped:system-namespace", 0.00002), ("skipped:opt-out", 0.25),
            ("bad-request", None), ("too-large", None), ("failed", 0.001),
            ("denied", 0.0001), ("ignored", 2.0), ("unchanged", 1.0)]


def reference() -> bytes:
    """The same observations through prometheus_client's metrics, as the webhook once kept
    them."""
    registry = CollectorRegistry(auto_describe=True)
    mine = WebhookMetrics()
    docs = {family.name: family.documentation for family in mine.collect()}
    requests = Counter("meshinject_requests", docs["meshinject_requests"], ["outcome"],
                       registry=registry)
    injections = Counter("meshinject_injections", docs["meshinject_injections"],
                         registry=registry)
    skips = Counter("meshinject_skips", docs["meshinject_skips"], ["reason"], registry=registry)
    failures = Counter("meshinject_failures", docs["meshinject_failures"], ["reason"],
                       registry=registry)
    duration = Histogram("meshinject_review_duration_seconds",
                         docs["meshinject_review_duration_seconds"],
                         buckets=metrics._BUCKETS, registry=registry)
    for outcome, seconds in RECORDED:
        requests.labels(outcome).inc()
        if outcome == "injected":
            injections.inc()
        elif outcome.startswith("skipped:"):
            skips.labels(outcome.removeprefix("skipped:")).inc()
        elif outcome in ("bad-request", "too-large", "failed"):
            failures.labels("internal" if outcome == "failed" else outcome).inc()
        if seconds is not None:
            duration.observe(seconds)
    return generate_latest(registry)


def without_created(text: bytes) -> list[bytes]:
    return [line for line in text.splitlines() if b"_created" not in line]


def test_the_counts_render_as_prometheus_clients_metrics_would() -> None:
    mine = WebhookMetrics()
    for outcome, seconds in RECORDED:
        mine.record(outcome, seconds)
    assert without_created(mine.render()) == without_created(reference())


def test_before_any_request_the_families_are_there_and_empty() -> None:
    text = WebhookMetrics().render().decode()
    assert "meshinject_injections_total 0.0" in text
    assert 'meshinject_review_duration_seconds_bucket{le="+Inf"} 0.0' in text
    assert "meshinject_requests_total{" not in text
