"""Parsing the L7 annotations: defaults, overrides, and errors that name annotation and value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from initcontainer.config import PortRange
from mesh.contract import (
    ACCESS_LOG,
    DRAIN_TIME,
    FAULT_ABORT,
    FAULT_DELAY,
    MAX_CONNECTIONS,
    MAX_PENDING_REQUESTS,
    MAX_REQUESTS,
    OPAQUE_PORTS,
    OUTLIER_CONSECUTIVE_5XX,
    OUTLIER_EJECTION_TIME,
    PER_TRY_TIMEOUT,
    PROTOCOL_DETECTION_TIMEOUT,
    RETRIES,
    RETRY_BACKOFF,
    RETRY_BUDGET_PERCENT,
    RETRY_ON,
    TIMEOUT,
)
from mesh.errors import AnnotationError, MeshError
from mesh.overrides.traffic import Fault, TrafficPolicy, parse_traffic_policy
from mesh.overrides.values import UINT32
from mesh.settings import MeshConfig, config_from_mapping

MESH = MeshConfig()


def parse(**annotations: str) -> TrafficPolicy:
    return parse_traffic_policy(annotations, config=MESH)


def test_a_pod_without_annotations_gets_the_safe_defaults() -> None:
    policy = parse_traffic_policy({}, config=MESH)
    assert policy.timeout_ms == 0
    assert policy.retries == 2
    assert policy.retry_on == ("connect-failure", "refused-stream", "reset-before-request")
    assert policy.retry_budget_percent == 20.0
    assert policy.max_requests == UINT32
    assert policy.fault_delay is None and policy.fault_abort is None
    assert policy.access_log is False
    assert policy.drain_seconds == MESH.proxy.drain_seconds
    assert PortRange(3306, 3306) in policy.opaque_ports
    assert policy.detection_timeout_ms == 1000


def test_every_knob_is_overridden_by_its_annotation() -> None:
    policy = parse_traffic_policy({
        TIMEOUT: "250ms", RETRIES: "3", RETRY_ON: "5xx, reset, 429",
        PER_TRY_TIMEOUT: "100ms", RETRY_BACKOFF: "10ms", RETRY_BUDGET_PERCENT: "12.5",
        MAX_CONNECTIONS: "10", MAX_PENDING_REQUESTS: "5", MAX_REQUESTS: "7",
        OUTLIER_CONSECUTIVE_5XX: "3", OUTLIER_EJECTION_TIME: "1.5s",
        FAULT_DELAY: "100ms@10", FAULT_ABORT: "503@5", ACCESS_LOG: "off",
        DRAIN_TIME: "12s", OPAQUE_PORTS: "4000-4010,9000",
        PROTOCOL_DETECTION_TIMEOUT: "200ms",
    }, config=MESH)
    assert policy == TrafficPolicy(
        timeout_ms=250, retries=3, retry_on=("5xx", "reset", "retriable-status-codes"),
        retriable_status_codes=(429,), per_try_timeout_ms=100, retry_backoff_ms=10,
        retry_budget_percent=12.5, retry_min_concurrency=3, max_connections=10,
        max_pending_requests=5, max_requests=7, outlier_consecutive_5xx=3,
        outlier_ejection_time_ms=1500, fault_delay=Fault(100, 10.0), fault_abort=Fault(503, 5.0),
        access_log=False, drain_seconds=12,
        opaque_ports=(PortRange(4000, 4010), PortRange(9000, 9000)), detection_timeout_ms=200,
    )


def test_mesh_defaults_come_from_the_traffic_section() -> None:
    config = config_from_mapping({"traffic": {"timeout": "3s", "retries": 0, "accessLog": False,
                                              "opaquePorts": "3306"}})
    policy = parse_traffic_policy({}, config=config)
    assert (policy.timeout_ms, policy.retries, policy.access_log) == (3000, 0, False)
    assert policy.opaque_ports == (PortRange(3306, 3306),)


def test_a_bad_mesh_default_blames_the_config_field_not_a_pod() -> None:
    config = config_from_mapping({"traffic": {"retryOn": "sometimes"}})
    with pytest.raises(MeshError, match=r"traffic\.retryOn='sometimes'"):
        parse_traffic_policy({}, config=config)


def test_a_fault_without_a_percentage_hits_every_request() -> None:
    assert parse(**{FAULT_ABORT: "500"}).fault_abort == Fault(500, 100.0)


@pytest.mark.parametrize(("annotation", "value"), [
    (TIMEOUT, "2"), (TIMEOUT, "fast"), (TIMEOUT, "-1s"), (TIMEOUT, "0.5ms"),
    (TIMEOUT, "25h"), (RETRIES, "11"), (RETRIES, "two"), (RETRY_ON, "5xx,sometimes"),
    (RETRY_ON, "700"), (PER_TRY_TIMEOUT, "1 s"), (RETRY_BACKOFF, "0ms"),
    (RETRY_BUDGET_PERCENT, "120"), (RETRY_BUDGET_PERCENT, "nan"),
    (MAX_CONNECTIONS, "0"), (MAX_PENDING_REQUESTS, "4294967296"),
    (MAX_REQUESTS, "1e3"), (OUTLIER_CONSECUTIVE_5XX, "-3"),
    (OUTLIER_EJECTION_TIME, "0s"), (FAULT_DELAY, "100@10"), (FAULT_DELAY, "100ms@x"),
    (FAULT_DELAY, "100ms@101"), (FAULT_ABORT, "99@5"), (FAULT_ABORT, "abc@5"),
    (ACCESS_LOG, "maybe"), (DRAIN_TIME, "10m"), (OPAQUE_PORTS, "3306,70000"),
    (PROTOCOL_DETECTION_TIMEOUT, "soon"),
])
def test_a_bad_value_is_refused_naming_annotation_and_value(annotation: str, value: str) -> None:
    with pytest.raises(AnnotationError) as caught:
        parse(**{annotation: value})
    assert caught.value.annotation == annotation
    assert annotation in str(caught.value) and value in str(caught.value)


def test_a_per_try_timeout_longer_than_the_request_timeout_is_refused() -> None:
    with pytest.raises(AnnotationError, match="per-try-timeout"):
        parse(**{TIMEOUT: "1s", PER_TRY_TIMEOUT: "2s"})


def test_a_value_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(AnnotationError, match="quote it"):
        parse_traffic_policy({RETRIES: 3}, config=MESH)  # type: ignore[dict-item]


ANNOTATIONS = [TIMEOUT, RETRIES, RETRY_ON, PER_TRY_TIMEOUT, RETRY_BACKOFF,
               RETRY_BUDGET_PERCENT, MAX_CONNECTIONS, MAX_PENDING_REQUESTS,
               MAX_REQUESTS, OUTLIER_CONSECUTIVE_5XX, OUTLIER_EJECTION_TIME,
               FAULT_DELAY, FAULT_ABORT, ACCESS_LOG, DRAIN_TIME, OPAQUE_PORTS,
               PROTOCOL_DETECTION_TIMEOUT]


@settings(max_examples=400, deadline=None)
@given(annotation=st.sampled_from(ANNOTATIONS), value=st.text(max_size=30))
def test_any_value_either_parses_or_is_refused_by_name(annotation: str, value: str) -> None:
    try:
        parse(**{annotation: value})
    except AnnotationError as err:
        assert err.annotation == annotation


@pytest.mark.parametrize(
    "value", ["\u00b2", "\u0663s", "1" * 5000, "5\n0", "1e3ms", "inf", "\u0661\u0660@5"]
)
def test_unicode_digits_and_huge_numbers_are_refused_not_crashed_on(value: str) -> None:
    for annotation in ANNOTATIONS:
        with pytest.raises(AnnotationError):
            parse(**{annotation: value})
