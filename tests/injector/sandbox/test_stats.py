"""Reading what a proxy carried from Envoy's counters and JSON access log (pure)."""

from __future__ import annotations

import json

from injector.sandbox import stats

COUNTERS = """\
listener.0.0.0.0_15001.downstream_cx_total: 7
listener.0.0.0.0_15006.downstream_cx_total: 3
cluster.outbound_http.upstream_rq_retry: 2
cluster.inbound_http.upstream_rq_time: P0(nan,1.0) P25(nan,1.1)
"""


def _log(*entries: dict[str, object]) -> str:
    lines = ["[2026-11-25 22:00:00.000][1][info][main] starting", *map(json.dumps, entries)]
    return "\n".join(lines) + "\n"


def test_counters_are_parsed_and_histograms_skipped() -> None:
    parsed = stats.parse(COUNTERS)
    assert parsed[stats.OUTBOUND_LISTENER + "downstream_cx_total"] == 7
    assert not any("upstream_rq_time" in name for name in parsed)


def test_http_requests_are_counted_by_destination_code_and_attempts() -> None:
    log = _log(
        {"direction": "outbound", "protocol": "HTTP/1.1", "authority": "reviews",
         "response_code": 200, "upstream_attempts": 2},
        {"direction": "outbound", "protocol": "HTTP/1.1", "authority": "reviews",
         "response_code": 200, "upstream_attempts": 1},
        {"direction": "outbound", "protocol": "HTTP/1.1", "authority": "catalog",
         "response_code": 200, "upstream_attempts": 1},
        {"direction": "inbound", "protocol": "HTTP/1.1", "authority": "frontend",
         "response_code": 502},
    )
    t = stats.summarize(stats.parse(COUNTERS), stats.access_entries(log))
    assert t.requests_out["reviews"]["200"] == 2 and t.attempts_out["reviews"] == 3
    assert t.requests_in["502"] == 1 and t.retries == 2
    assert (t.connections_out, t.connections_in) == (7, 3)


def test_tcp_connections_are_counted_by_upstream_host() -> None:
    log = _log(
        {"direction": "outbound", "protocol": "tcp", "upstream_host": "198.19.0.11:80"},
        {"direction": "outbound", "protocol": "tcp", "upstream_host": "198.19.0.11:80"},
        {"direction": "inbound", "protocol": "tcp", "upstream_host": "198.18.0.11:8080"},
    )
    t = stats.summarize({}, stats.access_entries(log))
    assert t.tcp_out == {"198.19.0.11:80": 2} and not t.requests_out and not t.requests_in


def test_codes_read_most_frequent_first() -> None:
    from collections import Counter

    assert stats.codes(Counter({"503": 75, "200": 300})) == "300 x 200, 75 x 503"
    assert stats.codes(Counter()) == "none"


def test_without_an_access_log_requests_in_count_plaintext_and_mutual_tls() -> None:
    counters = {"http.inbound_http.downstream_rq_200": 2,
                "http.inbound_mtls_http.downstream_rq_200": 5,
                "http.inbound_mtls_http.downstream_rq_503": 1,
                "http.inbound_mtls_http.downstream_rq_total": 6}
    assert dict(stats.summarize(counters, []).requests_in) == {"200": 7, "503": 1}
