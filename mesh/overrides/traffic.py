"""The pod's L7 policy: ``proxy.meshinject.io/*`` annotations over the mesh's traffic defaults.

Parsed and validated here, once, into a frozen :class:`TrafficPolicy` that
:mod:`mesh.envoy.http` renders. Every value is checked at admission, so a typo denies the pod
with a message naming the annotation and the value instead of producing a bootstrap Envoy
refuses at start-up (a crash-looping sidecar is a far worse way to learn about a typo).

Durations read like Kubernetes users write them: ``250ms``, ``2s``, ``1.5m``; ``0s`` turns a
timeout off. Mesh defaults use the same syntax; a bad default is the operator's error and is
raised as :class:`~mesh.errors.MeshError` naming the config field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

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
from mesh.overrides.values import (
    UINT32,
    Problems,
    is_count,
    is_duration,
    parse_bool,
    parse_count,
    parse_duration_ms,
    parse_percent,
    parse_ports,
)
from mesh.settings import MeshConfig, TrafficDefaults

# Envoy's x-envoy-retry-on conditions (HTTP and gRPC); a status code such as 503 is also taken.
RETRY_CONDITIONS = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
    "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal",
    "resource-exhausted", "unavailable",
})

T = TypeVar("T")


@dataclass(frozen=True)
class Fault:
    """Inbound fault injection: a delay (``value`` in ms) or an abort (``value`` an HTTP code)
    applied to ``percent`` of requests."""

    value: int
    percent: float


@dataclass(frozen=True)
class TrafficPolicy:
    """Everything the L7 part of the bootstrap depends on; times in milliseconds, 0 = off."""

    timeout_ms: int = 0
    retries: int = 2
    retry_on: tuple[str, ...] = ("connect-failure", "refused-stream", "reset-before-request")
    retriable_status_codes: tuple[int, ...] = ()
    per_try_timeout_ms: int = 0
    retry_backoff_ms: int = 25
    retry_budget_percent: float = 20.0
    retry_min_concurrency: int = 3
    max_connections: int = UINT32
    max_pending_requests: int = UINT32
    max_requests: int = UINT32
    outlier_consecutive_5xx: int = 5
    outlier_ejection_time_ms: int = 30_000
    fault_delay: Fault | None = None
    fault_abort: Fault | None = None
    access_log: bool = False
    drain_seconds: int = 5
    opaque_ports: tuple[PortRange, ...] = ()
    detection_timeout_ms: int = 1000


def parse_retry_on(name: str, value: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``"5xx,reset,429"`` -> conditions and retriable status codes (a code implies the
    ``retriable-status-codes`` condition)."""
    conditions: list[str] = []
    codes: list[int] = []
    for item in (part.strip().lower() for part in value.split(",")):
        if not item:
            continue
        if is_count(item) and 100 <= int(item) <= 599:
            codes.append(int(item))
        elif item in RETRY_CONDITIONS:
            conditions.append(item)
        else:
            known = ", ".join(sorted(RETRY_CONDITIONS))
            raise AnnotationError(name, value, f"{item!r} is not a retry condition ({known}, "
                                  "or a status code such as 503)")
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    return tuple(dict.fromkeys(conditions)), tuple(sorted(set(codes)))


def parse_fault(name: str, value: str, *, abort: bool) -> Fault:
    """``"100ms@10"`` (delay) or ``"503@5"`` (abort); without ``@`` the fault hits every request."""
    what, sep, pct = value.strip().partition("@")
    try:
        percent = parse_percent(name, pct) if sep else 100.0
        if not abort:
            if not is_duration(what):
                raise AnnotationError(name, what, "the delay is a duration")
            return Fault(parse_duration_ms(name, what, allow_zero=False), percent)
    except AnnotationError as err:
        shape = '"DELAY@PERCENT" like "100ms@10"' if not abort else '"STATUS@PERCENT"'
        raise AnnotationError(name, value, f"expected {shape}: {err.why}") from err
    text = what.strip()
    if not is_count(text) or not 200 <= int(text) <= 599:
        raise AnnotationError(name, value, 'expected "STATUS@PERCENT" like "503@5", '
                              "status 200 to 599")
    return Fault(int(text), percent)


def _opaque(name: str, value: str) -> tuple[PortRange, ...]:
    return parse_ports(name, value, example="3306,5432")


def _default(field: str, text: str, parse: Callable[[str, str], T]) -> T:
    """Parse a mesh default with the annotation's parser; blame the config field instead."""
    try:
        return parse(f"mesh config traffic.{field}", text)
    except AnnotationError as err:
        why = f"mesh config traffic.{field}={text!r} is invalid: {err.why}"
        raise MeshError(why) from err


def parse_traffic_policy(annotations: Mapping[str, str], *, config: MeshConfig) -> TrafficPolicy:
    """The pod's TrafficPolicy; raises AnnotationError for a bad annotation, PodErrors naming
    every one when there are several."""
    d: TrafficDefaults = config.traffic
    problems = Problems()

    def pick(key: str, field: str, default: str, parse: Callable[[str, str], T]) -> T:
        fallback = _default(field, default, parse)
        value = annotations.get(key)
        if value is None:
            return fallback
        if not isinstance(value, str):
            problems.errors.append(
                AnnotationError(key, str(value), "annotation values are strings: quote it"))
            return fallback
        return problems.take(fallback, parse, key, value)

    def fault(key: str, *, abort: bool) -> Fault | None:
        value = annotations.get(key)
        if value is None:
            return None
        return problems.take(None, parse_fault, key, value, abort=abort)

    retry_on, codes = pick(RETRY_ON, "retryOn", d.retry_on, parse_retry_on)
    policy = TrafficPolicy(
        timeout_ms=pick(TIMEOUT, "timeout", d.timeout, parse_duration_ms),
        retries=pick(RETRIES, "retries", str(d.retries),
                     lambda n, v: parse_count(n, v, high=10)),
        retry_on=retry_on,
        retriable_status_codes=codes,
        per_try_timeout_ms=pick(PER_TRY_TIMEOUT, "perTryTimeout", d.per_try_timeout,
                                parse_duration_ms),
        retry_backoff_ms=pick(RETRY_BACKOFF, "retryBackoff", d.retry_backoff,
                              lambda n, v: parse_duration_ms(n, v, allow_zero=False)),
        retry_budget_percent=pick(RETRY_BUDGET_PERCENT, "retryBudgetPercent",
                                  str(d.retry_budget_percent), parse_percent),
        retry_min_concurrency=d.retry_min_concurrency,
        max_connections=pick(MAX_CONNECTIONS, "maxConnections", str(d.max_connections),
                             lambda n, v: parse_count(n, v, low=1)),
        max_pending_requests=pick(MAX_PENDING_REQUESTS, "maxPendingRequests",
                                  str(d.max_pending_requests),
                                  lambda n, v: parse_count(n, v, low=1)),
        max_requests=pick(MAX_REQUESTS, "maxRequests", str(d.max_requests),
                          lambda n, v: parse_count(n, v, low=1)),
        outlier_consecutive_5xx=pick(OUTLIER_CONSECUTIVE_5XX, "outlierConsecutive5xx",
                                     str(d.outlier_consecutive_5xx), parse_count),
        outlier_ejection_time_ms=pick(OUTLIER_EJECTION_TIME, "outlierEjectionTime",
                                      d.outlier_ejection_time,
                                      lambda n, v: parse_duration_ms(n, v, allow_zero=False)),
        fault_delay=fault(FAULT_DELAY, abort=False),
        fault_abort=fault(FAULT_ABORT, abort=True),
        access_log=pick(ACCESS_LOG, "accessLog", str(d.access_log), parse_bool),
        drain_seconds=pick(DRAIN_TIME, "drainSeconds", f"{config.proxy.drain_seconds}s",
                           _drain_seconds),
        opaque_ports=pick(OPAQUE_PORTS, "opaquePorts", d.opaque_ports, _opaque),
        detection_timeout_ms=pick(PROTOCOL_DETECTION_TIMEOUT, "protocolDetectionTimeout",
                                  d.protocol_detection_timeout, parse_duration_ms),
    )
    # compared only when neither value failed to parse (that one is reported already)
    unread = {getattr(err, "annotation", None) for err in problems.errors}
    timeouts = policy.per_try_timeout_ms, policy.timeout_ms
    if not unread & {TIMEOUT, PER_TRY_TIMEOUT} and all(timeouts) and timeouts[0] > timeouts[1]:
        problems.errors.append(AnnotationError(
            PER_TRY_TIMEOUT, annotations.get(PER_TRY_TIMEOUT, ""),
            f"longer than the request timeout ({policy.timeout_ms}ms), so no retry could ever run"))
    problems.raise_any()
    return policy


def _drain_seconds(name: str, value: str) -> int:
    ms = parse_duration_ms(name, value)
    if ms > 300_000:
        raise AnnotationError(name, value, "at most 300s (the pod's grace period must cover it)")
    return math.ceil(ms / 1000)
