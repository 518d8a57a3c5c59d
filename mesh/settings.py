"""The mesh-wide configuration every meshinject program reads: :class:`MeshConfig`.

Read from a YAML file (the ConfigMap mounted into the injector, or ``--config FILE``), validated
once at start-up, then passed around as a frozen value. Field names in YAML are camelCase like
the rest of Kubernetes; an unknown or badly typed field is an error naming the field.
:func:`load_config` is the one loader every command uses, so a bad file reads the same
everywhere.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from fractions import Fraction
from functools import cached_property
from typing import Any, Literal, Self

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from mesh.contract import CONTROLPLANE_SERVICE, INJECTOR_NAMESPACE, XDS_PORT
from mesh.errors import SettingsError
from mesh.quantity import parse_quantity


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )


class Resources(_Model):
    """Requests and limits of one container, as Kubernetes quantities ("" leaves one unset).

    Checked as the API server would check the container: each a quantity, none negative, no
    request above its limit (a pod annotation may still move one; see mesh.overrides.pod)."""

    cpu: str = "100m"
    memory: str = "64Mi"
    cpu_limit: str = ""
    memory_limit: str = ""

    @field_validator("cpu", "memory", "cpu_limit", "memory_limit", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        """``cpu: 2`` in YAML is a number; Kubernetes takes it, so do we."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        values: dict[str, Fraction] = {}
        for field in ("cpu", "memory", "cpu_limit", "memory_limit"):
            text = getattr(self, field)
            if not text:
                continue
            try:
                values[field] = parse_quantity(text)
            except ValueError:
                raise ValueError(f"{to_camel(field)}: {text!r} is not a Kubernetes quantity "
                                 '(like "100m", "0.5", "64Mi")') from None
            if values[field] < 0:
                raise ValueError(f"{to_camel(field)}: {text!r} is negative")
        for request in ("cpu", "memory"):
            limit = f"{request}_limit"
            if request in values and limit in values and values[request] > values[limit]:
                raise ValueError(f"{request} {getattr(self, request)} is above {to_camel(limit)} "
                                 f"{getattr(self, limit)}: Kubernetes refuses a request over "
                                 "its limit")
        return self


class ProxySettings(_Model):
    """The mesh-proxy container."""

    image: str = "envoyproxy/envoy:v1.40.0"
    resources: Resources = Resources(cpu="100m", memory="64Mi", cpu_limit="2", memory_limit="256Mi")
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical", "off"] = "warning"
    # one Envoy worker: at sidecar loads it matched a bare Envoy's latency where two added
    # 1.2-1.5 ms at p90, and used 1.5 MB less (docs/proxy.md); a busy pod raises it by annotation
    concurrency: int = Field(default=1, ge=1, le=64)
    drain_seconds: int = Field(default=5, ge=0, le=300)


class InitSettings(_Model):
    """The mesh-init container."""

    image: str = "ghcr.io/meshinject/mesh-init:0.1.0"
    resources: Resources = Resources(
        cpu="10m", memory="32Mi", cpu_limit="100m", memory_limit="64Mi"
    )


class CaptureDefaults(_Model):
    """Mesh-wide capture defaults; the pod's traffic annotations override them."""

    interception_mode: Literal["REDIRECT", "TPROXY"] = "REDIRECT"
    exclude_inbound_ports: str = ""
    exclude_outbound_ports: str = ""
    exclude_outbound_ip_ranges: str = ""


_DURATION = r"^\s*([0-9]+(\.[0-9]+)?|\.[0-9]+)(ms|s|m|h)\s*$"  # ASCII digits only
_UINT32 = 2**32 - 1


class TrafficDefaults(_Model):
    """Mesh-wide L7 policy; each ``proxy.meshinject.io/*`` annotation overrides its field.

    Durations are written like the annotations ("250ms", "2s"; "0s" turns a timeout off). The
    defaults change nothing an app could notice: no request timeout, retries only where the
    request never reached the app, limits far above any one pod's load, ejection only observed.
    """

    timeout: str = Field(default="0s", pattern=_DURATION)
    retries: int = Field(default=2, ge=0, le=10)
    retry_on: str = "connect-failure,refused-stream,reset-before-request"
    per_try_timeout: str = Field(default="0s", pattern=_DURATION)
    retry_backoff: str = Field(default="25ms", pattern=_DURATION)
    retry_budget_percent: float = Field(default=20.0, ge=0, le=100)
    retry_min_concurrency: int = Field(default=3, ge=0, le=_UINT32)
    max_connections: int = Field(default=_UINT32, ge=1, le=_UINT32)
    max_pending_requests: int = Field(default=_UINT32, ge=1, le=_UINT32)
    max_requests: int = Field(default=_UINT32, ge=1, le=_UINT32)
    outlier_consecutive_5xx: int = Field(default=5, ge=0, le=_UINT32)
    outlier_ejection_time: str = Field(default="30s", pattern=_DURATION)
    # off, as in Istio and Linkerd: a log line per request costs each proxy ~10% more CPU
    access_log: bool = False
    opaque_ports: str = "25,587,3306,4444,5432,6379,9300,11211"
    protocol_detection_timeout: str = Field(default="1s", pattern=_DURATION)


class ControlPlaneSettings(_Model):
    """Where proxies find the control plane, and the token they present to it."""

    address: str = Field(default=f"{CONTROLPLANE_SERVICE}.{INJECTOR_NAMESPACE}.svc:{XDS_PORT}",
                         pattern=r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$")
    # the projected token's lifetime; the kubelet renews it at 80%, the proxy rereads it on
    # every (re)connect
    token_seconds: int = Field(default=3600, ge=600, le=86400)


class MeshConfig(_Model):
    """Everything the injector needs to render a pod, mesh-wide."""

    proxy: ProxySettings = ProxySettings()
    init: InitSettings = InitSettings()
    capture: CaptureDefaults = CaptureDefaults()
    traffic: TrafficDefaults = TrafficDefaults()
    control_plane: ControlPlaneSettings = ControlPlaneSettings()
    native_sidecars: bool = True
    injector_namespace: str = INJECTOR_NAMESPACE

    def fingerprint(self) -> str:
        """A short hash of the whole config: the status annotation records it, so a pod
        injected under another config can be found and re-rendered."""
        return self._fingerprint

    def injection_fingerprint(self) -> str:
        """A short hash of what an injected pod spec is rendered from: everything but the
        traffic defaults, which reach running proxies over xDS and need no new pod."""
        return self._injection_fingerprint

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy, without the fingerprint and hash cached on this one: with
        ``update`` the copy is another config."""
        copied = super().model_copy(update=update, deep=deep)
        for cached in ("_fingerprint", "_hash", "_injection_fingerprint"):
            copied.__dict__.pop(cached, None)
        return copied

    def __hash__(self) -> int:
        # the injector's caches are keyed on the config: hash it once, not field by field
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash(self._fingerprint)

    @cached_property
    def _fingerprint(self) -> str:
        # computed once per config: the webhook asks for it on every pod
        canonical = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:16]

    @cached_property
    def _injection_fingerprint(self) -> str:
        rendered = self.model_dump(mode="json", exclude={"traffic"})
        canonical = orjson.dumps(rendered, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:16]


def config_from_mapping(data: Any) -> MeshConfig:
    """Validate parsed YAML/JSON into a MeshConfig, with errors that name the field."""
    if data is None:
        return MeshConfig()
    if not isinstance(data, dict):
        raise SettingsError(f"mesh config must be a mapping, got {type(data).__name__}")
    try:
        return MeshConfig.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            for e in err.errors()
        )
        raise SettingsError(f"invalid mesh config: {problems}") from None


def config_from_yaml(text: str) -> MeshConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SettingsError(f"mesh config is not valid YAML: {err}") from None
    return config_from_mapping(data)


def load_config(path: str | None) -> MeshConfig:
    """The mesh config in the YAML file ``path`` (``-``: stdin), or the defaults for None.

    Every command's ``--config`` comes through here: a file that cannot be read or holds a bad
    config raises :class:`SettingsError` naming the file and the field."""
    if path is None:
        return MeshConfig()
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SettingsError(f"--config {path}: cannot read: {why}") from err
    try:
        return config_from_yaml(text)
    except SettingsError as err:
        raise SettingsError(f"--config {path}: {err}") from err
