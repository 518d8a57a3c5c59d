"""The webhook's Prometheus metrics, in a registry of its own.

A private registry (not prometheus_client's global one) so that two apps in one process, as in
the tests, never collide, and ``/metrics`` shows only what the webhook counts. Label values are
bounded: outcomes and reason codes come from the review and the policy, never from user input,
so a hostile request cannot blow up the series count.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Reviews take tens of microseconds to a few milliseconds; the default buckets start at 5 ms.
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_FAILURES = {"bad-request": "bad-request", "too-large": "too-large", "failed": "internal"}


class WebhookMetrics:
    """The counts and the review-time histogram of one app, kept as plain numbers.

    The webhook records from its one event loop thread, so a review is counted with a few
    additions and no lock; prometheus_client's Counter and Histogram (a lock per increment, a
    walk over the buckets) took 4.3 us of each ``/mutate``, 7% of its server CPU for a realistic
    pod. The numbers become metric families only when ``/metrics`` is read.
    """

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}  # by outcome
        self.injections = 0
        self.skips: dict[str, int] = {}  # by reason code
        self.failures: dict[str, int] = {}  # by reason: bad-request, too-large, internal
        self.review_counts = [0] * (len(_BUCKETS) + 1)  # per bucket (the last: beyond 1 s)
        self.review_seconds = 0.0
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def record(self, outcome: str, seconds: float | None = None) -> None:
        """Count one answered request; ``outcome`` is the review's label."""
        self.requests[outcome] = self.requests.get(outcome, 0) + 1
        if outcome == "injected":
            self.injections += 1
        elif outcome.startswith("skipped:"):
            reason = outcome.removeprefix("skipped:")
            self.skips[reason] = self.skips.get(reason, 0) + 1
        elif (failure := _FAILURES.get(outcome)) is not None:
            self.failures[failure] = self.failures.get(failure, 0) + 1
        if seconds is not None:
            self.review_counts[bisect_left(_BUCKETS, seconds)] += 1  # le: bound >= seconds
            self.review_seconds += seconds

    def collect(self) -> Iterator[Metric]:
        """The metric families, as the registry asks for them."""
        yield _by_label(
            "meshinject_requests",
            "Admission requests answered, by outcome (injected, skipped:<reason>, allowed, "
            "denied, bad-request, too-large, failed)", "outcome", self.requests)
        injections = CounterMetricFamily("meshinject_injections",
                                         "Pods patched with the mesh sidecar")
        injections.add_metric([], self.injections)
        yield injections
        yield _by_label("meshinject_skips", "Pods left alone, by reason code", "reason",
                        self.skips)
        yield _by_label(
            "meshinject_failures",
            "Requests the webhook could not review, by reason (bad-request, too-large, internal);"
            " a denied pod is an answer, not a failure", "reason", self.failures)
        cumulative = list(accumulate(self.review_counts))
        bounds = [repr(b) for b in _BUCKETS] + ["+Inf"]  # as prometheus_client writes them
        yield HistogramMetricFamily(
            "meshinject_review_duration_seconds",
            "Time to review one AdmissionReview, from body received to answer built",
            buckets=list(zip(bounds, cumulative, strict=True)), sum_value=self.review_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _by_label(name: str, documentation: str, label: str, counts: dict[str, int]
              ) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in counts.items():
        family.add_metric([value], count)
    return family
