"""Inbound fault injection, protocol detection (server-first protocols), stats and access logs,
through two real proxies and real capture."""

from __future__ import annotations

import json
import math
import time

import pytest

from mesh.contract import (
    ACCESS_LOG,
    FAULT_ABORT,
    FAULT_DELAY,
    PROTOCOL_DETECTION_TIMEOUT,
)
from tests.support.lab import NAMESPACE, PY, SERVER_IP, Mesh
from tests.support.spec import boot

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow]

BANNER_CLIENT = (
    "import socket,sys,time\n"
    "t=time.monotonic(); s=socket.create_connection((sys.argv[1],int(sys.argv[2])),5)\n"
    "s.settimeout(5); first=s.recv(100); waited=time.monotonic()-t\n"
    "s.sendall(b'hi\\n'); echo=s.recv(100)\n"
    "print(waited); print(first.decode().strip()); print(echo.decode().strip())\n"
)


def test_abort_50_percent_over_1000_requests_is_within_statistical_bounds(mesh: Mesh) -> None:
    mesh.start(boot(), boot(**{FAULT_ABORT: "503@50"}))
    mesh.server.start_upstream(8080)
    n = 1000
    result = mesh.client.load(SERVER_IP, 8080, "--requests", str(n), "--concurrency", "4")
    aborted = result["outcomes"].get("503", 0)
    assert aborted + result["outcomes"].get("200", 0) == n
    bound = 5 * math.sqrt(n * 0.5 * 0.5)  # five standard deviations: 1 in 1.7 million flakes
    assert abs(aborted - n / 2) <= bound, aborted
    injected = mesh.server.stats("http.inbound_http.fault.aborts_injected")
    assert injected == {"http.inbound_http.fault.aborts_injected": aborted}


def test_a_delay_fault_slows_the_chosen_requests(mesh: Mesh) -> None:
    mesh.start(boot(), boot(**{FAULT_DELAY: "150ms@100"}))
    mesh.server.start_upstream(8080)
    result = mesh.client.load(SERVER_IP, 8080, "--requests", "5")
    assert result["outcomes"] == {"200": 5}
    assert result["p50"] >= 0.15


def banner(mesh: Mesh, port: int, *, address: str = SERVER_IP) -> tuple[float, str, str]:
    out = mesh.client.ns.run([PY, "-c", BANNER_CLIENT, address, str(port)]).stdout.split("\n")
    return float(out[0]), out[1], out[2]


def test_a_server_first_protocol_on_an_opaque_port_answers_at_once_over_mutual_tls(
    mesh: Mesh,
) -> None:
    """A meshed client calls through the Service: its proxy opens mutual TLS, whose first
    bytes are the client's, so the server's proxy need not wait for the app's client."""
    with_log = boot(**{ACCESS_LOG: "on"})
    mesh.start(with_log, with_log)
    mesh.server.start_upstream(3306, "--banner")
    mesh.control.service(name="db", namespace=NAMESPACE, cluster_ip="198.19.7.33",
                         ports=[("mysql", 3306, 3306)], endpoints=[SERVER_IP])
    # the two pods share one link and no default route: give the virtual address one, as a
    # pod's default route would (the proxy captures the connection before it goes anywhere)
    mesh.client.ns.run(["ip", "route", "add", "198.19.7.33", "via", SERVER_IP])
    deadline = time.monotonic() + 5
    while "198.18.5.2:3306" not in mesh.client.admin("/clusters"):
        assert time.monotonic() < deadline, "the client's proxy never learned the Service"
        time.sleep(0.05)
    waited, first, echo = banner(mesh, 3306, address="198.19.7.33")
    assert first.startswith("220 hello") and echo == "echo hi"
    assert waited < 0.2, waited
    stats = mesh.server.stats("listener.0.0.0.0_15006.ssl.handshake")
    assert stats["listener.0.0.0.0_15006.ssl.handshake"] == 1  # it was mutual TLS


def test_a_plaintext_server_first_client_waits_only_the_detection_timeout(mesh: Mesh) -> None:
    """From outside the mesh (here: straight to the pod's address, which no Service names)
    the connection is plaintext, and a PERMISSIVE proxy must see whether it is TLS before it
    can choose: it waits for the client's first bytes up to the detection timeout, then goes
    on as TCP (docs/security.md). STRICT would refuse it instead."""
    with_log = boot(**{ACCESS_LOG: "on"})
    mesh.start(with_log, boot(**{ACCESS_LOG: "on", PROTOCOL_DETECTION_TIMEOUT: "100ms"}))
    mesh.server.start_upstream(3306, "--banner")
    waited, first, echo = banner(mesh, 3306)
    assert first.startswith("220 hello") and echo == "echo hi"
    assert 0.09 < waited < 0.4, waited
    tcp = mesh.client.stats("cluster.outbound-passthrough.upstream_cx_total")
    assert tcp["cluster.outbound-passthrough.upstream_cx_total"] == 1
    time.sleep(1.2)  # logged when the connection closes, flushed each second
    logged = [json.loads(line) for line in mesh.client.log().splitlines() if line.startswith("{")]
    assert [(x["protocol"], x["upstream_host"]) for x in logged] == [("tcp", f"{SERVER_IP}:3306")]


def test_a_server_first_protocol_elsewhere_works_after_the_detection_timeout(
    mesh: Mesh,
) -> None:
    quick = {PROTOCOL_DETECTION_TIMEOUT: "300ms"}
    mesh.start(boot(**quick), boot(**quick))
    mesh.server.start_upstream(7000, "--banner")
    waited, first, echo = banner(mesh, 7000)
    assert first.startswith("220 hello") and echo == "echo hi"
    assert 0.25 <= waited < 1.5, waited  # each proxy waits once for the client to speak


def test_h2c_is_detected_and_stays_http2_to_the_app(mesh: Mesh) -> None:
    mesh.start(boot(), boot())
    mesh.server.start_envoy_app(8090)
    out = mesh.client.ns.run(["curl", "-s", "--http2-prior-knowledge", "-w", " %{http_version}",
                              f"http://{SERVER_IP}:8090/"]).stdout
    assert out == "hello 2"
    assert mesh.client.stats("http.outbound_http.downstream_cx_http2_total") == {
        "http.outbound_http.downstream_cx_http2_total": 1}
    assert mesh.server.stats("cluster.inbound_http.upstream_cx_http2_total") == {
        "cluster.inbound_http.upstream_cx_http2_total": 1}


def test_http_stats_have_clear_prefixes_and_access_logs_are_json_lines(mesh: Mesh) -> None:
    with_log = boot(**{ACCESS_LOG: "on"})
    mesh.start(with_log, with_log)
    mesh.server.start_upstream(8080, "--body-bytes", "1024")
    assert mesh.client.load(SERVER_IP, 8080, "--requests", "20")["outcomes"] == {"200": 20}
    prom = mesh.client.admin("/stats/prometheus")
    for metric in ("envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\","
                   "envoy_http_conn_manager_prefix=\"outbound_http\"} 20",
                   "envoy_cluster_upstream_rq_retry{envoy_cluster_name=\"outbound_http\"}",
                   "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"outbound_http\"",
                   "envoy_cluster_upstream_cx_rx_bytes_total{envoy_cluster_name=\"outbound_http\"}",
                   "envoy_cluster_outlier_detection_ejections_enforced_total{"
                   "envoy_cluster_name=\"outbound_http\"}"):
        assert metric in prom, metric
    inbound = mesh.server.stats("http.inbound_http.downstream_rq_2xx")
    assert inbound == {"http.inbound_http.downstream_rq_2xx": 20}
    time.sleep(1.2)  # the stdout logger flushes on a timer
    lines = [json.loads(line) for line in mesh.client.log().splitlines() if line.startswith("{")]
    assert len(lines) == 20, mesh.client.log()[:3000]
    assert lines[0]["direction"] == "outbound" and lines[0]["response_code"] == 200
    assert lines[0]["upstream_host"] == f"{SERVER_IP}:8080" and lines[0]["bytes_sent"] == 1024
    # one request id end to end: the server's proxy logs the id the client's proxy gave it
    served = [json.loads(line) for line in mesh.server.log().splitlines() if line.startswith("{")]
    assert [x["request_id"] for x in served] == [x["request_id"] for x in lines]
    assert served[0]["direction"] == "inbound"


def test_access_logs_are_off_by_default(mesh: Mesh) -> None:
    mesh.start(boot(), boot())
    mesh.server.start_upstream(8080)
    assert mesh.client.load(SERVER_IP, 8080, "--requests", "5")["outcomes"] == {"200": 5}
    time.sleep(1.2)
    assert not [line for line in mesh.client.log().splitlines() if line.startswith("{")]


def test_http_goes_through_both_l7_chains_in_tproxy_mode(mesh: Mesh) -> None:
    tproxy = boot(**{"traffic.meshinject.io/interception-mode": "TPROXY"})
    mesh.start(tproxy, tproxy)
    mesh.server.start_upstream(8080)
    assert mesh.client.load(SERVER_IP, 8080, "--requests", "10")["outcomes"] == {"200": 10}
    assert mesh.client.stats("http.outbound_http.downstream_rq_2xx") == {
        "http.outbound_http.downstream_rq_2xx": 10}
    assert mesh.server.stats("http.inbound_http.downstream_rq_2xx") == {
        "http.inbound_http.downstream_rq_2xx": 10}
