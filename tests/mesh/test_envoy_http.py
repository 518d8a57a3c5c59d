"""The rendered L7 parts: their shape (golden files) and Envoy's own verdict (validate mode)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from controlplane.model.values import Service, ServicePort
from controlplane.translate.proxy import translate
from mesh.contract import (
    ACCESS_LOG,
    DRAIN_TIME,
    FAULT_ABORT,
    FAULT_DELAY,
    MAX_CONNECTIONS,
    MAX_PENDING_REQUESTS,
    MAX_REQUESTS,
    NOT_DELIVERED_HEADER,
    OPAQUE_PORTS,
    OUTLIER_CONSECUTIVE_5XX,
    OUTLIER_EJECTION_TIME,
    PER_TRY_TIMEOUT,
    RETRIES,
    RETRY_BUDGET_PERCENT,
    RETRY_ON,
    TIMEOUT,
)
from mesh.envoy import base, process
from mesh.envoy import http as envoy_http
from mesh.overrides.pod import parse_overrides
from mesh.overrides.traffic import TrafficPolicy, parse_traffic_policy
from mesh.settings import MeshConfig
from tests.support.envoy import as_static, validate

FULL = {
    TIMEOUT: "2s", RETRIES: "3", RETRY_ON: "5xx,reset,429", PER_TRY_TIMEOUT: "500ms",
    RETRY_BUDGET_PERCENT: "25", MAX_CONNECTIONS: "100", MAX_PENDING_REQUESTS: "10",
    MAX_REQUESTS: "50", OUTLIER_CONSECUTIVE_5XX: "4", OUTLIER_EJECTION_TIME: "15s",
    FAULT_DELAY: "100ms@10", FAULT_ABORT: "503@0.5", OPAQUE_PORTS: "3306,7000-7010",
    ACCESS_LOG: "on",
}
POLICIES: dict[str, dict[str, str]] = {
    "defaults": {},
    "full": FULL,
    "quiet": {ACCESS_LOG: "false", RETRIES: "0", OUTLIER_CONSECUTIVE_5XX: "0",
              OPAQUE_PORTS: "5432"},
}


def policy(name: str) -> TrafficPolicy:
    return parse_traffic_policy(POLICIES[name], config=MeshConfig())


def parts(p: TrafficPolicy) -> dict[str, object]:
    return {
        "listener_filter": envoy_http.detection_listener_filter(p),
        "listener_options": envoy_http.listener_options(p, direction="inbound"),
        "outbound_chain": envoy_http.http_filter_chain(p, direction="outbound"),
        "inbound_chain": envoy_http.http_filter_chain(p, direction="inbound"),
        "clusters": envoy_http.clusters(p),
    }


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_l7_parts_match_their_golden(name: str, golden: Callable[[str, str], None]) -> None:
    text = json.dumps(parts(policy(name)), indent=1, sort_keys=True) + "\n"
    golden(f"mesh/envoy_http/{name}.json", text)


@pytest.mark.envoy
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_envoy_accepts_the_resources_a_pod_with_them_is_sent(name: str) -> None:
    config = MeshConfig()
    overrides = parse_overrides(POLICIES[name], config=config)
    web = Service("shop", "web", "198.19.0.9", (ServicePort(80, "http"), ServicePort(5432, "db")))
    result = validate(as_static(translate([web], overrides=overrides).by_type()))
    assert result.returncode == 0, result.stderr[-2000:]


def test_percentages_keep_their_precision() -> None:
    assert base.fraction(0.5) == {"numerator": 5000, "denominator": "MILLION"}
    assert base.fraction(100) == {"numerator": 1_000_000, "denominator": "MILLION"}


def test_opaque_ports_switch_the_inspector_off_and_nothing_else() -> None:
    one = envoy_http.detection_listener_filter(policy("quiet"))
    assert one["filter_disabled"] == {"destination_port_range": {"start": 5432, "end": 5433}}
    none = envoy_http.detection_listener_filter(
        parse_traffic_policy({OPAQUE_PORTS: ""}, config=MeshConfig()))
    assert "filter_disabled" not in none


def test_only_the_outbound_route_retries_and_times_out() -> None:
    p = policy("full")
    inbound = envoy_http.route_config(p, direction="inbound")["virtual_hosts"][0]["routes"][0]
    outbound = envoy_http.route_config(p, direction="outbound")["virtual_hosts"][0]["routes"][0]
    assert inbound["route"] == {"cluster": "inbound_http", "timeout": "0s"}
    assert outbound["route"]["timeout"] == "2.000s"
    assert outbound["route"]["retry_policy"]["retriable_status_codes"] == [429]


def test_connect_failure_also_retries_what_the_peer_proxy_could_not_deliver() -> None:
    def retry(annotations: dict[str, str]) -> dict[str, object]:
        p = parse_traffic_policy(annotations, config=MeshConfig())
        route = envoy_http.route_config(p, direction="outbound")["virtual_hosts"][0]["routes"][0]
        found: dict[str, object] = route["route"]["retry_policy"]
        return found

    default = retry({})
    assert default["retry_on"] == (
        "connect-failure,refused-stream,reset-before-request,retriable-headers")
    assert default["retriable_headers"] == [{"name": NOT_DELIVERED_HEADER, "present_match": True}]
    without = retry({RETRY_ON: "5xx"})
    assert without["retry_on"] == "5xx" and "retriable_headers" not in without


def test_only_the_inbound_proxy_marks_a_request_it_did_not_deliver_and_both_strip_it() -> None:
    p = policy("defaults")
    inbound = envoy_http.http_connection_manager(p, direction="inbound")["typed_config"]
    outbound = envoy_http.http_connection_manager(p, direction="outbound")["typed_config"]
    mapper = inbound["local_reply_config"]["mappers"][0]
    assert mapper["filter"] == {"response_flag_filter": {"flags": ["UF", "UH", "UO"]}}
    assert mapper["headers_to_add"][0]["header"]["key"] == NOT_DELIVERED_HEADER
    assert "local_reply_config" not in outbound
    for hcm in (inbound, outbound):
        assert hcm["route_config"]["response_headers_to_remove"] == [NOT_DELIVERED_HEADER]


def test_the_prestop_hook_drains_inbound_then_waits_the_drain_time() -> None:
    p = parse_traffic_policy({DRAIN_TIME: "7s"}, config=MeshConfig())
    command = process.prestop_command(p)
    assert command[:2] == ["/bin/bash", "-c"]
    assert "POST /drain_listeners?graceful&inboundonly HTTP/1.1" in command[2]
    assert command[2].endswith("; sleep 7")
    assert process.proxy_args(p)[:4] == ["--drain-time-s", "7", "--drain-strategy", "immediate"]


@pytest.mark.envoy
def test_the_prestop_script_is_valid_bash() -> None:
    command = process.prestop_command(policy("defaults"))
    result = subprocess.run(["bash", "-n", "-c", command[2]], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
