"""What a live pod tells about its injection: the facts ``check`` and ``inspect`` both print.

Everything here works on the pod JSON the API server returns, using the same pure core the
webhook uses (``policy.decide``, ``parse_overrides``, ``patch.config_hash``), so the CLI's
verdict can never drift from the webhook's. Reading the pods and the mesh config is
:mod:`injector.cluster`'s job; this module only judges what it is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from initcontainer.config import ConfigError
from initcontainer.config import parse as parse_init_args
from injector.core.patch import config_hash
from injector.core.policy import Decision, decide
from mesh.contract import INIT_NAME, PROXY_NAME, STATUS
from mesh.errors import MeshError
from mesh.overrides.pod import parse_overrides
from mesh.settings import MeshConfig

Obj = dict[str, Any]


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector as the API server evaluates it (absent or empty: everything)."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


@dataclass(frozen=True)
class PodFacts:
    pod: Obj
    namespace: str
    name: str
    decision: Decision
    injected: bool
    native: bool | None = None
    proxy_ready: bool | None = None
    restarts: int = 0
    capture: str = "-"
    up_to_date: bool | None = None
    problem: str = ""

    @property
    def missing(self) -> bool:
        """It should have been injected and was not: the case to flag."""
        return self.decision.inject and not self.injected

    @property
    def verdict(self) -> str:
        if self.missing:
            return "NOT injected, but it should be"
        if self.injected and not self.decision.inject:
            return "injected, though it would not be if created now"
        return ("injected" if self.injected else "not injected") + ", as it should be"

    @property
    def injected_column(self) -> str:
        return "MISSING" if self.missing else ("yes" if self.injected else "no")

    @property
    def summary(self) -> str:
        mode = "native sidecar" if self.native else "classic sidecar"
        ready = {True: "proxy ready", False: "proxy NOT ready", None: "proxy status unknown"}
        config = {
            True: "config current",
            False: "OUT OF DATE (restart to re-inject)",
            None: f"config unknown ({self.problem or 'no hash'})",
        }
        return (
            f"{INIT_NAME} + {PROXY_NAME} ({mode}), {ready[self.proxy_ready]}, "
            f"{self.restarts} restarts, capture {self.capture}, {config[self.up_to_date]}"
        )


def injection_status(pod: Mapping[str, Any]) -> Obj | None:
    """The parsed meshinject.io/status annotation, or None when the pod was not injected."""
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(STATUS)
    if not text:
        return None
    try:
        status = json.loads(text)
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def _container_status(pod: Mapping[str, Any], name: str, *, native: bool) -> Obj:
    status = pod.get("status") or {}
    listed = status.get("initContainerStatuses" if native else "containerStatuses") or []
    return next((c for c in listed if c.get("name") == name), {})


def _capture_mode(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec") or {}
    init = next((c for c in spec.get("initContainers") or [] if c.get("name") == INIT_NAME), None)
    if init is None:
        return "-"
    try:
        capture, _ = parse_init_args(list(init.get("args") or []))
    except ConfigError:
        return "?"
    return str(capture.interception_mode)


def _up_to_date(pod: Mapping[str, Any], status: Obj, config: MeshConfig) -> tuple[bool | None, str]:
    recorded = status.get("configHash")
    if not recorded:
        return None, "no configHash in the status annotation"
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    try:
        overrides = parse_overrides(annotations, config=config)
    except MeshError as err:
        return None, str(err)
    return recorded == config_hash(config=config, overrides=overrides), ""


def pod_facts(
    pod: Obj, *, namespace: str, namespace_labels: Mapping[str, str], config: MeshConfig
) -> PodFacts:
    meta = pod.get("metadata") or {}
    decision = decide(pod, namespace=namespace, namespace_labels=namespace_labels, config=config)
    status = injection_status(pod)
    name = str(meta.get("name", "?"))
    if status is None:
        return PodFacts(pod, namespace, name, decision, injected=False)
    native = PROXY_NAME in (status.get("initContainers") or [])
    proxy = _container_status(pod, PROXY_NAME, native=native)
    fresh, problem = _up_to_date(pod, status, config)
    return PodFacts(
        pod,
        namespace,
        name,
        decision,
        injected=True,
        native=native,
        proxy_ready=proxy.get("ready") if proxy else None,
        restarts=int(proxy.get("restartCount") or 0),
        capture=_capture_mode(pod),
        up_to_date=fresh,
        problem=problem,
    )
