"""A pod's annotations, parsed into :class:`PodOverrides` of the mesh config.

A pod tunes its own injection with ``traffic.meshinject.io/*`` (what mesh-init captures) and
``proxy.meshinject.io/*`` (the proxy container). Everything is validated here, once, into a
frozen :class:`PodOverrides`; a bad value raises :class:`~mesh.errors.AnnotationError` naming
annotation and value, so the webhook can deny the pod with a message the user can act on. The
traffic values are parsed by mesh-init's own parsers, so the injector can never accept what
mesh-init rejects.

The L7 policy keys (timeouts, retries, breakers, faults, telemetry, drain) are parsed by
:mod:`mesh.overrides.traffic`, called from here so a bad one denies the pod like any other, into
:attr:`PodOverrides.traffic`. An unknown key under our prefixes is not an error (a newer
meshinject may know it); ``injector.core.advice`` warns about it, naming the nearest known key.
Every bad value of a pod is reported at once (:class:`~mesh.errors.PodErrors`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar, get_args

from initcontainer import config as capture_config
from initcontainer.config import CaptureConfig, ConfigError, IPNetwork, PortRange
from mesh.contract import (
    EXCLUDE_INBOUND_PORTS,
    EXCLUDE_OUTBOUND_IP_RANGES,
    EXCLUDE_OUTBOUND_PORTS,
    INCLUDE_INBOUND_PORTS,
    INCLUDE_OUTBOUND_IP_RANGES,
    INCLUDE_OUTBOUND_PORTS,
    INTERCEPTION_MODE,
    MTLS_MODE,
    OUR_PREFIXES,
    PROMETHEUS_PORT,
    PROXY_CONCURRENCY,
    PROXY_CPU,
    PROXY_CPU_LIMIT,
    PROXY_IMAGE,
    PROXY_LOG_LEVEL,
    PROXY_MEMORY,
    PROXY_MEMORY_LIMIT,
    PROXY_NATIVE_SIDECAR,
    READINESS_PORT,
)
from mesh.errors import AnnotationError, MeshError
from mesh.overrides.traffic import TrafficPolicy, parse_traffic_policy
from mesh.overrides.values import (
    CPU,
    MEMORY,
    MtlsMode,
    Problems,
    by_mesh_init,
    parse_bool,
    parse_mtls_mode,
    parse_ports,
    parse_quantity,
)
from mesh.quantity import parse_quantity as quantity
from mesh.settings import MeshConfig, ProxySettings, Resources

# The proxy's own listeners: capturing them would send the kubelet's probes and Prometheus'
# scrapes into the inbound passthrough instead of to Envoy.
PROXY_INBOUND_PORTS = (PortRange(READINESS_PORT, READINESS_PORT),
                       PortRange(PROMETHEUS_PORT, PROMETHEUS_PORT))

_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
_LOG_LEVELS: tuple[str, ...] = get_args(ProxySettings.model_fields["log_level"].annotation)

T = TypeVar("T")


@dataclass(frozen=True)
class PodOverrides:
    """Everything a pod's annotations decide, merged over the mesh defaults."""

    capture: CaptureConfig
    image: str
    resources: Resources
    log_level: str
    concurrency: int
    native: bool
    # every traffic./proxy. annotation, sorted: the L7 module reads its keys from here, and the
    # status annotation's hash covers them so that changing one re-renders the pod
    proxy_annotations: tuple[tuple[str, str], ...] = ()
    # the L7 policy (timeouts, retries, breakers, faults, telemetry, drain), validated here
    # with the rest so a bad value denies the pod at admission
    traffic: TrafficPolicy = dataclasses.field(default_factory=TrafficPolicy)
    # security.meshinject.io/mtls: STRICT or PERMISSIVE for this pod alone; None leaves it to
    # the AccessPolicies that select it, then its namespace's label, then PERMISSIVE
    mtls: MtlsMode | None = None

    def __hash__(self) -> int:
        # the sidecars are cached per overrides: hash what sets them apart cheaply (the
        # annotations), and let equality compare the rest on the rare collision
        return hash(self.proxy_annotations)


def _ports_why(name: str, value: str) -> capture_config.Ports:
    return parse_ports(name, value, example="80,8000-8100")


def _default(field: str, text: str, parse: Callable[[str, str], T]) -> T:
    """Mesh defaults are strings in the config; a bad one is the operator's error, not the pod's."""
    try:
        return parse(f"mesh config capture.{field}", text)
    except ConfigError as err:
        raise MeshError(str(err)) from err


def capture_overrides(annotations: Mapping[str, str], *, config: MeshConfig,
                      problems: Problems | None = None) -> CaptureConfig:
    """The pod's CaptureConfig: an annotation replaces the mesh default for its setting.

    With ``problems`` a bad annotation is recorded there and its default stands in; without,
    the first one raises."""
    own = problems is None
    found = Problems() if problems is None else problems
    defaults = config.capture
    get = annotations.get

    def read(key: str, fallback: T, parse: Callable[[str, str], T]) -> T:
        text = get(key)
        return fallback if text is None else found.take(fallback, parse, key, text)

    def read_include(key: str, parse: Callable[[str, str], T]) -> T | None:
        text = get(key)
        if text is None or text.strip() == "*":
            return None
        return found.take(None, parse, key, text)

    def cidrs(key: str, text: str) -> tuple[IPNetwork, ...]:
        return by_mesh_init(key, text, capture_config.parse_cidrs)

    exclude_in = read(EXCLUDE_INBOUND_PORTS, _default(
        "excludeInboundPorts", defaults.exclude_inbound_ports, capture_config.parse_ports),
        _ports_why)
    exclude_out = read(EXCLUDE_OUTBOUND_PORTS, _default(
        "excludeOutboundPorts", defaults.exclude_outbound_ports, capture_config.parse_ports),
        _ports_why)
    exclude_cidrs = read(EXCLUDE_OUTBOUND_IP_RANGES, _default(
        "excludeOutboundIpRanges", defaults.exclude_outbound_ip_ranges,
        capture_config.parse_cidrs), cidrs)
    include_in = read_include(INCLUDE_INBOUND_PORTS, _ports_why)
    include_out = read_include(INCLUDE_OUTBOUND_PORTS, _ports_why)
    include_cidrs = read_include(INCLUDE_OUTBOUND_IP_RANGES, cidrs)
    mode = read(INTERCEPTION_MODE, defaults.interception_mode,
                lambda key, text: by_mesh_init(key, text, capture_config.parse_mode))
    if own:
        found.raise_any()
    return CaptureConfig(
        include_inbound_ports=include_in,
        exclude_inbound_ports=capture_config.merge_ranges((*exclude_in, *PROXY_INBOUND_PORTS)),
        include_outbound_ports=include_out,
        exclude_outbound_ports=exclude_out,
        include_outbound_cidrs=include_cidrs,
        exclude_outbound_cidrs=exclude_cidrs,
        interception_mode=mode,
    )


# (request field, limit field, request annotation, limit annotation)
_PAIRS = (("cpu", "cpu_limit", PROXY_CPU, PROXY_CPU_LIMIT),
          ("memory", "memory_limit", PROXY_MEMORY, PROXY_MEMORY_LIMIT))


def _resources(annotations: Mapping[str, str], base: Resources, problems: Problems) -> Resources:
    """The proxy's resources: the annotations over the mesh defaults, never a request above
    its limit (the API server refuses that pod). docs/proxy.md states the rule:

    - the pod sets both, request above limit: refused, naming both annotations and values;
    - the pod sets only the limit, below the default request: the request comes down to the
      limit, as Kubernetes itself sets a request to its limit when only the limit is given;
    - the pod sets only the request, above the default limit: the limit goes up to the
      request; the pod asked for at least that much, and the default limit is only our guess.
    """
    changes: dict[str, str] = {}
    for name, field, pattern, example in (
        (PROXY_CPU, "cpu", CPU, '"100m" or "0.5"'),
        (PROXY_CPU_LIMIT, "cpu_limit", CPU, '"2" or "500m"'),
        (PROXY_MEMORY, "memory", MEMORY, '"64Mi" or "1G"'),
        (PROXY_MEMORY_LIMIT, "memory_limit", MEMORY, '"256Mi" or "1Gi"'),
    ):
        if (value := annotations.get(name)) is not None:
            text = problems.take(None, parse_quantity, name, value, pattern=pattern,
                                 example=example)
            if text is not None:
                changes[field] = text
    for request, limit, request_key, limit_key in _PAIRS:
        wanted = changes.get(request, getattr(base, request))
        cap = changes.get(limit, getattr(base, limit))
        if not wanted or not cap or quantity(wanted) <= quantity(cap):
            continue
        if request in changes and limit in changes:
            problems.errors.append(AnnotationError(
                request_key, wanted, f"the request is above {limit_key}={cap!r}, and Kubernetes "
                "refuses a container whose request exceeds its limit"))
        elif limit in changes:
            changes[request] = cap
        else:
            changes[limit] = wanted
    return base.model_copy(update=changes) if changes else base


def parse_overrides(annotations: Mapping[str, str], *, config: MeshConfig) -> PodOverrides:
    """Validate a pod's annotations into overrides of the mesh config; raises AnnotationError
    for one bad annotation, PodErrors naming every one when there are several.

    Only ``traffic.`` and ``proxy.`` annotations matter, and most pods carry the same few (or
    none), so the result is cached on exactly those: the webhook parses each set once.
    """
    ours = []
    problems = Problems()
    for key, raw in annotations.items():
        if key.startswith(OUR_PREFIXES):
            if not isinstance(raw, str):
                problems.errors.append(
                    AnnotationError(key, str(raw), "annotation values are strings: quote it"))
                continue
            ours.append((key, raw))
    if problems.errors:  # the rest read as usual, to report them too
        problems.take(None, _parse_ours, tuple(sorted(ours)), config)
        problems.raise_any()
    return _parse_ours(tuple(sorted(ours)), config)


@functools.lru_cache(maxsize=512)
def _parse_ours(ours: tuple[tuple[str, str], ...], config: MeshConfig) -> PodOverrides:
    annotations = dict(ours)
    proxy = config.proxy
    problems = Problems()

    def read(key: str, fallback: T, parse: Callable[[str, str], T]) -> T:
        value = annotations.get(key)
        return fallback if value is None else problems.take(fallback, parse, key, value)

    image = read(PROXY_IMAGE, proxy.image, _image)
    log_level = read(PROXY_LOG_LEVEL, str(proxy.log_level), _log_level)
    concurrency = read(PROXY_CONCURRENCY, proxy.concurrency, _concurrency)
    native = read(PROXY_NATIVE_SIDECAR, config.native_sidecars, parse_bool)
    capture = capture_overrides(annotations, config=config, problems=problems)
    resources = _resources(annotations, proxy.resources, problems)
    traffic = problems.take(TrafficPolicy(), parse_traffic_policy, annotations, config=config)
    mtls = read(MTLS_MODE, None, parse_mtls_mode)
    problems.raise_any()
    return PodOverrides(
        capture=capture,
        image=image,
        resources=resources,
        log_level=log_level,
        concurrency=concurrency,
        native=native,
        traffic=traffic,
        proxy_annotations=ours,
        mtls=mtls,
    )


def _image(name: str, value: str) -> str:
    image = value.strip()
    if len(image) > 1024 or not _IMAGE.match(image):
        raise AnnotationError(name, value, "expected a container image reference")
    return image


def _log_level(name: str, value: str) -> str:
    log_level = value.strip().lower()
    if log_level not in _LOG_LEVELS:
        raise AnnotationError(name, value, f"expected one of {', '.join(_LOG_LEVELS)}")
    return log_level


def _concurrency(name: str, value: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or not 1 <= int(text) <= 64:
        raise AnnotationError(name, value, "expected a number of workers, 1 to 64")
    return int(text)
