"""Outbound resilience through two injected pods (real mesh-init capture, real Envoy):
retries, the retry budget, timeouts, circuit breakers, outlier detection."""

from __future__ import annotations

import json

import pytest

from mesh.contract import (
    MAX_CONNECTIONS,
    MAX_PENDING_REQUESTS,
    MAX_REQUESTS,
    OUTLIER_CONSECUTIVE_5XX,
    OUTLIER_EJECTION_TIME,
    RETRIES,
    RETRY_BACKOFF,
    RETRY_BUDGET_PERCENT,
    RETRY_ON,
    TIMEOUT,
)
from tests.support.lab import SERVER_IP, Mesh
from tests.support.spec import boot

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow]


def test_retries_hide_an_upstream_that_fails_one_request_in_three(mesh: Mesh) -> None:
    mesh.start(boot(**{RETRY_ON: "5xx", RETRIES: "3"}), boot())
    mesh.server.start_upstream(8080, "--fail-every", "3")
    result = mesh.client.load(SERVER_IP, 8080, "--requests", "300", "--concurrency", "2")
    assert result["outcomes"] == {"200": 300}
    retries = mesh.client.stats("cluster.outbound_http.upstream_rq_retry")
    assert retries["cluster.outbound_http.upstream_rq_retry"] >= 100
    assert retries["cluster.outbound_http.upstream_rq_retry_success"] >= 100
    inbound = mesh.server.stats("http.inbound_http.downstream_rq_5xx")
    assert inbound["http.inbound_http.downstream_rq_5xx"] >= 100  # the server side saw them fail


def test_retries_against_an_upstream_that_always_fails_stay_within_the_budget(mesh: Mesh) -> None:
    mesh.start(boot(**{RETRY_ON: "5xx", RETRIES: "5", RETRY_BUDGET_PERCENT: "20",
                       RETRY_BACKOFF: "5ms", OUTLIER_CONSECUTIVE_5XX: "0"}), boot())
    mesh.server.start_upstream(8080, "--status", "503", "--delay-ms", "20")
    requests = 400
    result = mesh.client.load(SERVER_IP, 8080, "--requests", str(requests), "--concurrency", "20")
    assert result["outcomes"] == {"503": requests}
    attempts = int(mesh.server.ns.run(["curl", "-s", "127.0.0.1:8080/_count"]).stdout)
    stats = mesh.client.stats("cluster.outbound_http.upstream_rq_retry")
    # without a budget every request would be tried 6 times (2,400 attempts); the budget lets
    # at most max(20% of the active requests, 3) retries run at once
    assert stats["cluster.outbound_http.upstream_rq_retry_overflow"] > 0
    assert requests < attempts <= requests * 1.5, attempts
    print(f"always failing: {requests} requests, {attempts} upstream attempts")


def test_a_200ms_timeout_against_a_1s_upstream_answers_504_in_about_200ms(mesh: Mesh) -> None:
    mesh.start(boot(**{TIMEOUT: "200ms"}), boot())
    mesh.server.start_upstream(8080, "--delay-ms", "1000")
    result = mesh.client.load(SERVER_IP, 8080, "--requests", "5")
    assert result["outcomes"] == {"504": 5}
    assert 0.19 <= result["p50"] <= 0.35 and result["max"] < 0.5, result
    assert mesh.client.stats("cluster.outbound_http.upstream_rq_timeout") == {
        "cluster.outbound_http.upstream_rq_timeout": 5}


def test_a_burst_over_the_circuit_breaker_overflows_with_503_and_says_so(mesh: Mesh) -> None:
    mesh.start(boot(**{MAX_CONNECTIONS: "2", MAX_PENDING_REQUESTS: "2",
                       MAX_REQUESTS: "2"}), boot())
    mesh.server.start_upstream(8080, "--delay-ms", "300")
    result = mesh.client.load(SERVER_IP, 8080, "--requests", "20", "--concurrency", "20")
    overflowed = result["outcomes"].get("503", 0)
    assert overflowed >= 10 and result["outcomes"]["200"] >= 2, result
    stats = mesh.client.stats("cluster.outbound_http.upstream_rq_")
    # a request fails on the pending-queue breaker or on the max-requests one
    # (?usedonly leaves out a counter that never moved)
    assert (stats.get("cluster.outbound_http.upstream_rq_pending_overflow", 0)
            + stats.get("cluster.outbound_http.upstream_rq_active_overflow", 0)) == overflowed


def test_an_upstream_that_keeps_failing_is_ejected_while_a_healthy_one_goes_on(
    mesh: Mesh,
) -> None:
    mesh.start(boot(**{OUTLIER_CONSECUTIVE_5XX: "3", OUTLIER_EJECTION_TIME: "30s"}), boot())
    mesh.server.start_upstream(8081, "--status", "503")
    mesh.server.start_upstream(8082)
    failing = mesh.client.load(SERVER_IP, 8081, "--requests", "10")
    healthy = mesh.client.load(SERVER_IP, 8082, "--requests", "50")
    assert failing["outcomes"] == {"503": 10} and healthy["outcomes"] == {"200": 50}
    stats = mesh.client.stats("cluster.outbound_http.outlier_detection.ejections_enforced_total")
    assert stats == {"cluster.outbound_http.outlier_detection.ejections_enforced_total": 1}
    hosts = mesh.client.admin("/clusters?format=json")
    flags = {
        h["address"]["socket_address"]["port_value"]: h["health_status"]
        for c in json.loads(hosts)["cluster_statuses"] if c["name"] == "outbound_http"
        for h in c.get("host_statuses", [])
    }
    assert flags[8081].get("failed_outlier_check") is True
    assert not flags[8082].get("failed_outlier_check")
