"""Whether a pod joins the mesh, and a sentence saying why.

The decision is pure and ordered: hard skips first (a pod on the host network, a system
namespace, the injector's own namespace), then the pod's own opt-out, then the namespace. The
reason is for people (``meshinject check``, the webhook's warning); the code is a short label
for metrics, so dashboards can count skips by cause without parsing sentences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.contract import INJECT, NAMESPACE_ENABLED, SYSTEM_NAMESPACES
from mesh.settings import MeshConfig

_YES = ("true", "enabled")
_NO = ("false", "disabled")


@dataclass(frozen=True)
class Decision:
    inject: bool
    reason: str
    code: str


def _flag(values: Mapping[str, Any] | None) -> str | None:
    """The pod's meshinject.io/inject value, lower-cased, if it is one we understand."""
    if not isinstance(values, Mapping) or INJECT not in values:
        return None
    text = str(values[INJECT]).strip().lower()
    return text if text in (*_YES, *_NO) else None


def decide(
    pod: Mapping[str, Any],
    *,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    config: MeshConfig,
) -> Decision:
    """Decide for one pod (or pod template).

    ``namespace_labels`` is None when the caller already knows the namespace wants injection:
    the webhook (the API server's namespaceSelector matched) and offline ``inject`` (the user
    piped the manifest through us on purpose).
    """
    spec = pod.get("spec") or {}
    metadata = pod.get("metadata") or {}
    if spec.get("hostNetwork") is True:
        return Decision(False, "the pod uses the host network (hostNetwork: true), so capturing "
                        "its traffic would capture the node's", "host-network")
    if namespace in SYSTEM_NAMESPACES:
        return Decision(False, f"namespace {namespace} is a Kubernetes system namespace",
                        "system-namespace")
    if namespace == config.injector_namespace:
        return Decision(False, f"namespace {namespace} is the injector's own namespace",
                        "injector-namespace")
    label, annotation = _flag(metadata.get("labels")), _flag(metadata.get("annotations"))
    if label in _NO or annotation in _NO:
        where = "label" if label in _NO else "annotation"
        return Decision(False, f"the pod opts out with {where} {INJECT}=false", "opted-out")
    if namespace_labels is None:
        return Decision(True, "injection was requested for this pod", "injected")
    if namespace_labels.get(INJECT) == NAMESPACE_ENABLED:
        return Decision(True, f"namespace {namespace} has label {INJECT}={NAMESPACE_ENABLED}",
                        "injected")
    if label in _YES or annotation in _YES:
        where = "label" if label in _YES else "annotation"
        return Decision(True, f"the pod opts in with {where} {INJECT}=true", "injected")
    return Decision(False, f"namespace {namespace} does not have label "
                    f"{INJECT}={NAMESPACE_ENABLED} and the pod does not opt in",
                    "namespace-not-enabled")
