"""The pod's L7 policy: ``proxy.meshinject.io/*`` annotations over the mesh's traffic defaults.

Parsed and validated here, once, into a frozen :class:`TrafficPolicy` that
:mod:`injector.envoy_http` renders. Every value is checked at admission, so a typo denies the pod
with a message naming the annotation and the value instead of producing a bootstrap Envoy
refuses at start-up (a crash-looping sidecar is a far worse way to learn about a typo).

Durations read like Kubernetes users write them: ``250ms``, ``2s``, ``1.5m``; ``0s`` turns a
timeout off. Mesh defaults use the same syntax; a bad default is the operator's error and is
raised as :class:`MeshInjectError` naming the config field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from initcontainer import config as capture_config
from initcontainer.config import ConfigError, PortRange
from injector.errors import AnnotationError, MeshInjectError
from injector.settings import MeshConfig, TrafficDefaults

# the two annotation prefixes; injector.annotations re-exports them with the rest of the contract
TRAFFIC = "traffic.meshinject.io/"
PROXY = "proxy.meshinject.io/"
TIMEOUT = PROXY + "timeout"
RETRIES = PROXY + "retries"
RETRY_ON = PROXY + "retry-on"
PER_TRY_TIMEOUT = PROXY + "per-try-timeout"
RETRY_BACKOFF = PROXY + "retry-backoff"
RETRY_BUDGET_PERCENT = PROXY + "retry-budget-percent"
MAX_CONNECTIONS = PROXY + "max-connections"
MAX_PENDING_REQUESTS = PROXY + "max-pending-requests"
MAX_REQUESTS = PROXY + "max-requests"
OUTLIER_CONSECUTIVE_5XX = PROXY + "outlier-consecutive-5xx"
OUTLIER_EJECTION_TIME = PROXY + "outlier-ejection-time"
FAULT_DELAY = PROXY + "fault-delay"
FAULT_ABORT = PROXY + "fault-abort"
ACCESS_LOG = PROXY + "access-log"
DRAIN_TIME = PROXY + "drain-time"
PROTOCOL_DETECTION_TIMEOUT = PROXY + "protocol-detection-timeout"
OPAQUE_PORTS = TRAFFIC + "opaque-ports"

UINT32 = 2**32 - 1
# Envoy's x-envoy-retry-on conditions (HTTP and gRPC); a status code such as 503 is also taken.
RETRY_CONDITIONS = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
    "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal",
    "resource-exhausted", "unavailable",
})
_DURATION = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,9})?|\.[0-9]{1,9})(ms|s|m|h)")
_PERCENT = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,6})?|\.[0-9]{1,6}")
_DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: "²".isdigit() is true, int("²") fails
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_MAX_MS = 24 * 3_600_000
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")

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


def parse_duration_ms(name: str, value: str, *, allow_zero: bool = True) -> int:
    """``"250ms"`` -> 250, ``"2s"`` -> 2000; whole milliseconds, at most a day."""
    match = _DURATION.fullmatch(value.strip())
    if not match:
        raise AnnotationError(name, value, 'expected a duration like "250ms" or "2s"')
    ms = float(match.group(1)) * _UNIT_MS[match.group(2)]
    if ms != int(ms):
        raise AnnotationError(name, value, "durations are whole milliseconds")
    if ms > _MAX_MS:
        raise AnnotationError(name, value, "at most 24h")
    if ms == 0 and not allow_zero:
        raise AnnotationError(name, value, "must be more than zero")
    return int(ms)


def parse_count(name: str, value: str, *, low: int = 0, high: int = UINT32) -> int:
    text = value.strip()
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise AnnotationError(name, value, f"expected a whole number from {low} to {high}")
    return int(text)


def parse_percent(name: str, value: str) -> float:
    text = value.strip()
    if not _PERCENT.fullmatch(text) or not 0 <= float(text) <= 100:
        raise AnnotationError(name, value, "expected a percentage from 0 to 100")
    return float(text)


def parse_bool(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise AnnotationError(name, value, "expected true or false (or on/off)")


def parse_retry_on(name: str, value: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``"5xx,reset,429"`` -> conditions and retriable status codes (a code implies the
    ``retriable-status-codes`` condition)."""
    conditions: list[str] = []
    codes: list[int] = []
    for item in (part.strip().lower() for part in value.split(",")):
        if not item:
            continue
        if _DIGITS.fullmatch(item) and 100 <= int(item) <= 599:
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
            if not _DURATION.fullmatch(what.strip()):
                raise AnnotationError(name, what, "the delay is a duration")
            return Fault(parse_duration_ms(name, what, allow_zero=False), percent)
    except AnnotationError as err:
        shape = '"DELAY@PERCENT" like "100ms@10"' if not abort else '"STATUS@PERCENT"'
        raise AnnotationError(name, value, f"expected {shape}: {err.why}") from err
    text = what.strip()
    if not _DIGITS.fullmatch(text) or not 200 <= int(text) <= 599:
        raise AnnotationError(name, value, 'expected "STATUS@PERCENT" like "503@5", '
                              "status 200 to 599")
    return Fault(int(text), percent)


def parse_ports(name: str, value: str, *, example: str) -> tuple[PortRange, ...]:
    """mesh-init's port parser, its error restated as the annotation's, with an example."""
    try:
        return capture_config.parse_ports(name, value)
    except ConfigError as err:
        raise AnnotationError(name, value, f"expected ports like {example} ({err.why})") from err


def _opaque(name: str, value: str) -> tuple[PortRange, ...]:
    return parse_ports(name, value, example="3306,5432")


def _default(field: str, text: str, parse: Callable[[str, str], T]) -> T:
    """Parse a mesh default with the annotation's parser; blame the config field instead."""
    try:
        return parse(f"mesh config traffic.{field}", text)
    except AnnotationError as err:
        why = f"mesh config traffic.{field}={text!r} is invalid: {err.why}"
        raise MeshInjectError(why) from err


def parse_traffic_policy(annotations: Mapping[str, str], *, config: MeshConfig) -> TrafficPolicy:
    """The pod's TrafficPolicy; raises AnnotationError naming the first bad annotation."""
    d: TrafficDefaults = config.traffic

    def pick(key: str, field: str, default: str, parse: Callable[[str, str], T]) -> T:
        value = annotations.get(key)
        if value is None:
            return _default(field, default, parse)
        if not isinstance(value, str):
            raise AnnotationError(key, str(value), "annotation values are strings: quote it")
        return parse(key, value)

    retry_on, codes = pick(RETRY_ON, "retryOn", d.retry_on, parse_retry_on)
    delay = annotations.get(FAULT_DELAY)
    abort = annotations.get(FAULT_ABORT)
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
        fault_delay=None if delay is None else parse_fault(FAULT_DELAY, delay, abort=False),
        fault_abort=None if abort is None else parse_fault(FAULT_ABORT, abort, abort=True),
        access_log=pick(ACCESS_LOG, "accessLog", str(d.access_log), parse_bool),
        drain_seconds=pick(DRAIN_TIME, "drainSeconds", f"{config.proxy.drain_seconds}s",
                           _drain_seconds),
        opaque_ports=pick(OPAQUE_PORTS, "opaquePorts", d.opaque_ports, _opaque),
        detection_timeout_ms=pick(PROTOCOL_DETECTION_TIMEOUT, "protocolDetectionTimeout",
                                  d.protocol_detection_timeout, parse_duration_ms),
    )
    if policy.per_try_timeout_ms and policy.timeout_ms and \
            policy.per_try_timeout_ms > policy.timeout_ms:
        raise AnnotationError(PER_TRY_TIMEOUT, annotations.get(PER_TRY_TIMEOUT, ""),
                              f"longer than the request timeout ({policy.timeout_ms}ms), "
                              "so no retry could ever run")
    return policy


def _drain_seconds(name: str, value: str) -> int:
    ms = parse_duration_ms(name, value)
    if ms > 300_000:
        raise AnnotationError(name, value, "at most 300s (the pod's grace period must cover it)")
    return math.ceil(ms / 1000)
