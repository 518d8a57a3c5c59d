"""The webhook's Prometheus metrics, in a registry of its own.

A private registry (not prometheus_client's global one) so that two apps in one process, as in
the tests, never collide, and ``/metrics`` shows only what the webhook counts. Label values are
bounded: outcomes and reason codes come from the review and the policy, never from user input,
so a hostile request cannot blow up the series count.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Reviews take tens of microseconds to a few milliseconds; the default buckets start at 5 ms.
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class WebhookMetrics:
    """The counters and the latency histogram of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "meshinject_requests",
            "Admission requests answered, by outcome (injected, skipped:<reason>, allowed, "
            "denied, bad-request, too-large, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.injections = Counter(
            "meshinject_injections", "Pods patched with the mesh sidecar", registry=self.registry
        )
        self.skips = Counter(
            "meshinject_skips",
            "Pods left alone, by reason code",
            ["reason"],
            registry=self.registry,
        )
        self.failures = Counter(
            "meshinject_failures",
            "Requests the webhook could not review, by reason (bad-request, too-large, internal);"
            " a denied pod is an answer, not a failure",
            ["reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "meshinject_review_duration_seconds",
            "Time to review one AdmissionReview, from body received to answer built",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._counters: dict[str, tuple[Counter, ...]] = {}

    def record(self, outcome: str, seconds: float | None = None) -> None:
        """Count one answered request; ``outcome`` is the review's label."""
        counters = self._counters.get(outcome)
        if counters is None:  # outcomes are a bounded set (see above): one lookup each, ever
            counters = self._counters[outcome] = self._counters_of(outcome)
        for counter in counters:
            counter.inc()
        if seconds is not None:
            self.duration.observe(seconds)

    def _counters_of(self, outcome: str) -> tuple[Counter, ...]:
        counters = [self.requests.labels(outcome)]
        if outcome == "injected":
            counters.append(self.injections)
        elif outcome.startswith("skipped:"):
            counters.append(self.skips.labels(outcome.removeprefix("skipped:")))
        elif outcome in ("bad-request", "too-large", "failed"):
            counters.append(self.failures.labels("internal" if outcome == "failed" else outcome))
        return tuple(counters)

    def render(self) -> bytes:
        return generate_latest(self.registry)
