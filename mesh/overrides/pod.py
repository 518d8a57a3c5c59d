"""A pod's annotations, parsed into :class:`PodOverrides` of the mesh config.

A pod tunes its own injection with ``traffic.meshinject.io/*`` (what mesh-init captures) and
``proxy.meshinject.io/*`` (the proxy container). Everything is validated here, once, into a
frozen :class:`PodOverrides`; a bad value raises :class:`~mesh.errors.AnnotationError` naming
annotation and value, so the webhook can deny the pod with a message the user can act on. The
traffic values are parsed by mesh-init's own parsers, so the injector can never accept what
mesh-init rejects.

The L7 policy keys (timeouts, retries, breakers, faults, telemetry, drain) are parsed by
:mod:`mesh.overrides.traffic`, called from here so a bad one denies the pod like any other, into
:attr:`PodOverrides.traffic`. Other unknown ``proxy.meshinject.io/*`` keys are not errors.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar, get_args

from initcontainer import config as capture_config
from initcontainer.config import CaptureConfig, ConfigError, PortRange
from mesh.contract import (
    EXCLUDE_INBOUND_PORTS,
    EXCLUDE_OUTBOUND_IP_RANGES,
    EXCLUDE_OUTBOUND_PORTS,
    INCLUDE_INBOUND_PORTS,
    INCLUDE_OUTBOUND_IP_RANGES,
    INCLUDE_OUTBOUND_PORTS,
    INTERCEPTION_MODE,
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
from mesh.overrides.values import CPU, MEMORY, by_mesh_init, parse_bool, parse_ports, parse_quantity
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


def capture_overrides(annotations: Mapping[str, str], *, config: MeshConfig) -> CaptureConfig:
    """The pod's CaptureConfig: an annotation replaces the mesh default for its setting."""
    defaults = config.capture
    get = annotations.get
    exclude_in = _default("excludeInboundPorts", defaults.exclude_inbound_ports,
                          capture_config.parse_ports)
    if (text := get(EXCLUDE_INBOUND_PORTS)) is not None:
        exclude_in = _ports_why(EXCLUDE_INBOUND_PORTS, text)
    exclude_out = _default("excludeOutboundPorts", defaults.exclude_outbound_ports,
                           capture_config.parse_ports)
    if (text := get(EXCLUDE_OUTBOUND_PORTS)) is not None:
        exclude_out = _ports_why(EXCLUDE_OUTBOUND_PORTS, text)
    exclude_cidrs = _default("excludeOutboundIpRanges", defaults.exclude_outbound_ip_ranges,
                             capture_config.parse_cidrs)
    if (text := get(EXCLUDE_OUTBOUND_IP_RANGES)) is not None:
        exclude_cidrs = by_mesh_init(EXCLUDE_OUTBOUND_IP_RANGES, text, capture_config.parse_cidrs)
    include_in = include_out = None
    if (text := get(INCLUDE_INBOUND_PORTS)) is not None and text.strip() != "*":
        include_in = _ports_why(INCLUDE_INBOUND_PORTS, text)
    if (text := get(INCLUDE_OUTBOUND_PORTS)) is not None and text.strip() != "*":
        include_out = _ports_why(INCLUDE_OUTBOUND_PORTS, text)
    include_cidrs = None
    if (text := get(INCLUDE_OUTBOUND_IP_RANGES)) is not None and text.strip() != "*":
        include_cidrs = by_mesh_init(INCLUDE_OUTBOUND_IP_RANGES, text, capture_config.parse_cidrs)
    mode = defaults.interception_mode
    if (text := get(INTERCEPTION_MODE)) is not None:
        mode = by_mesh_init(INTERCEPTION_MODE, text, capture_config.parse_mode)
    return CaptureConfig(
        include_inbound_ports=include_in,
        exclude_inbound_ports=capture_config.merge_ranges((*exclude_in, *PROXY_INBOUND_PORTS)),
        include_outbound_ports=include_out,
        exclude_outbound_ports=exclude_out,
        include_outbound_cidrs=include_cidrs,
        exclude_outbound_cidrs=exclude_cidrs,
        interception_mode=mode,
    )


def _resources(annotations: Mapping[str, str], base: Resources) -> Resources:
    changes: dict[str, str] = {}
    for name, field, pattern, example in (
        (PROXY_CPU, "cpu", CPU, '"100m" or "0.5"'),
        (PROXY_CPU_LIMIT, "cpu_limit", CPU, '"2" or "500m"'),
        (PROXY_MEMORY, "memory", MEMORY, '"64Mi" or "1G"'),
        (PROXY_MEMORY_LIMIT, "memory_limit", MEMORY, '"256Mi" or "1Gi"'),
    ):
        if (value := annotations.get(name)) is not None:
            changes[field] = parse_quantity(name, value, pattern=pattern, example=example)
    return base.model_copy(update=changes) if changes else base


def parse_overrides(annotations: Mapping[str, str], *, config: MeshConfig) -> PodOverrides:
    """Validate a pod's annotations into overrides of the mesh config; raises AnnotationError.

    Only ``traffic.`` and ``proxy.`` annotations matter, and most pods carry the same few (or
    none), so the result is cached on exactly those: the webhook parses each set once.
    """
    ours = []
    for key, raw in annotations.items():
        if key.startswith(OUR_PREFIXES):
            if not isinstance(raw, str):
                raise AnnotationError(key, str(raw), "annotation values are strings: quote it")
            ours.append((key, raw))
    return _parse_ours(tuple(sorted(ours)), config)


@functools.lru_cache(maxsize=512)
def _parse_ours(ours: tuple[tuple[str, str], ...], config: MeshConfig) -> PodOverrides:
    annotations = dict(ours)
    proxy = config.proxy
    image = proxy.image
    if (value := annotations.get(PROXY_IMAGE)) is not None:
        image = value.strip()
        if len(image) > 1024 or not _IMAGE.match(image):
            raise AnnotationError(PROXY_IMAGE, value, "expected a container image reference")
    log_level: str = proxy.log_level
    if (value := annotations.get(PROXY_LOG_LEVEL)) is not None:
        log_level = value.strip().lower()
        if log_level not in _LOG_LEVELS:
            raise AnnotationError(PROXY_LOG_LEVEL, value,
                                  f"expected one of {', '.join(_LOG_LEVELS)}")
    concurrency = proxy.concurrency
    if (value := annotations.get(PROXY_CONCURRENCY)) is not None:
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 20 or not 1 <= int(text) <= 64:
            raise AnnotationError(PROXY_CONCURRENCY, value, "expected a number of workers, 1 to 64")
        concurrency = int(text)
    native = config.native_sidecars
    if (value := annotations.get(PROXY_NATIVE_SIDECAR)) is not None:
        native = parse_bool(PROXY_NATIVE_SIDECAR, value)
    return PodOverrides(
        capture=capture_overrides(annotations, config=config),
        image=image,
        resources=_resources(annotations, proxy.resources),
        log_level=log_level,
        concurrency=concurrency,
        native=native,
        traffic=parse_traffic_policy(annotations, config=config),
        proxy_annotations=ours,
    )
