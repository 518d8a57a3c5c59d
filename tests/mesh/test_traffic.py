"""Parsing the L7 annotations: defaults, overrides, and errors that name annotation and value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from initcontainer.config import PortRange
from injector import traffic_policy as tp
from injector.errors import AnnotationError, MeshInjectError
from injector.settings import MeshConfig, config_from_mapping
from injector.traffic_policy import Fault, TrafficPolicy, parse_traffic_policy

MESH = MeshConfig()


def parse(**annotations: str) -> TrafficPolicy:
    return parse_traffic_policy(annotations, config=MESH)


def test_a_pod_without_annotations_gets_the_safe_defaults() -> None:
    policy = parse_traffic_policy({}, config=MESH)
    assert policy.timeout_ms == 0
    assert policy.retries == 2
    assert policy.retry_on == ("connect-failure", "refused-stream", "reset-before-request")
    assert policy.retry_budget_percent == 20.0
    assert policy.max_requests == tp.UINT32
    assert policy.fault_delay is None and policy.fault_abort is None
    assert policy.access_log is False
    assert policy.drain_seconds == MESH.proxy.drain_seconds
    assert PortRange(3306, 3306) in policy.opaque_ports
    assert policy.detection_timeout_ms == 1000


def test_every_knob_is_overridden_by_its_annotation() -> None:
    policy = parse_traffic_policy({
        tp.TIMEOUT: "250ms", tp.RETRIES: "3", tp.RETRY_ON: "5xx, reset, 429",
        tp.PER_TRY_TIMEOUT: "100ms", tp.RETRY_BACKOFF: "10ms", tp.RETRY_BUDGET_PERCENT: "12.5",
        tp.MAX_CONNECTIONS: "10", tp.MAX_PENDING_REQUESTS: "5", tp.MAX_REQUESTS: "7",
        tp.OUTLIER_CONSECUTIVE_5XX: "3", tp.OUTLIER_EJECTION_TIME: "1.5s",
        tp.FAULT_DELAY: "100ms@10", tp.FAULT_ABORT: "503@5", tp.ACCESS_LOG: "off",
        tp.DRAIN_TIME: "12s", tp.OPAQUE_PORTS: "4000-4010,9000",
        tp.PROTOCOL_DETECTION_TIMEOUT: "200ms",
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
    with pytest.raises(MeshInjectError, match=r"traffic\.retryOn='sometimes'"):
        parse_traffic_policy({}, config=config)


def test_a_fault_without_a_percentage_hits_every_request() -> None:
    assert parse(**{tp.FAULT_ABORT: "500"}).fault_abort == Fault(500, 100.0)


@pytest.mark.parametrize(("annotation", "value"), [
    (tp.TIMEOUT, "2"), (tp.TIMEOUT, "fast"), (tp.TIMEOUT, "-1s"), (tp.TIMEOUT, "0.5ms"),
    (tp.TIMEOUT, "25h"), (tp.RETRIES, "11"), (tp.RETRIES, "two"), (tp.RETRY_ON, "5xx,sometimes"),
    (tp.RETRY_ON, "700"), (tp.PER_TRY_TIMEOUT, "1 s"), (tp.RETRY_BACKOFF, "0ms"),
    (tp.RETRY_BUDGET_PERCENT, "120"), (tp.RETRY_BUDGET_PERCENT, "nan"),
    (tp.MAX_CONNECTIONS, "0"), (tp.MAX_PENDING_REQUESTS, "4294967296"),
    (tp.MAX_REQUESTS, "1e3"), (tp.OUTLIER_CONSECUTIVE_5XX, "-3"),
    (tp.OUTLIER_EJECTION_TIME, "0s"), (tp.FAULT_DELAY, "100@10"), (tp.FAULT_DELAY, "100ms@x"),
    (tp.FAULT_DELAY, "100ms@101"), (tp.FAULT_ABORT, "99@5"), (tp.FAULT_ABORT, "abc@5"),
    (tp.ACCESS_LOG, "maybe"), (tp.DRAIN_TIME, "10m"), (tp.OPAQUE_PORTS, "3306,70000"),
    (tp.PROTOCOL_DETECTION_TIMEOUT, "soon"),
])
def test_a_bad_value_is_refused_naming_annotation_and_value(annotation: str, value: str) -> None:
    with pytest.raises(AnnotationError) as caught:
        parse(**{annotation: value})
    assert caught.value.annotation == annotation
    assert annotation in str(caught.value) and value in str(caught.value)


def test_a_per_try_timeout_longer_than_the_request_timeout_is_refused() -> None:
    with pytest.raises(AnnotationError, match="per-try-timeout"):
        parse(**{tp.TIMEOUT: "1s", tp.PER_TRY_TIMEOUT: "2s"})


def test_a_value_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(AnnotationError, match="quote it"):
        parse_traffic_policy({tp.RETRIES: 3}, config=MESH)  # type: ignore[dict-item]


ANNOTATIONS = [tp.TIMEOUT, tp.RETRIES, tp.RETRY_ON, tp.PER_TRY_TIMEOUT, tp.RETRY_BACKOFF,
               tp.RETRY_BUDGET_PERCENT, tp.MAX_CONNECTIONS, tp.MAX_PENDING_REQUESTS,
               tp.MAX_REQUESTS, tp.OUTLIER_CONSECUTIVE_5XX, tp.OUTLIER_EJECTION_TIME,
               tp.FAULT_DELAY, tp.FAULT_ABORT, tp.ACCESS_LOG, tp.DRAIN_TIME, tp.OPAQUE_PORTS,
               tp.PROTOCOL_DETECTION_TIMEOUT]


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
