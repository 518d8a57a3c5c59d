"""Whether a pod joins the mesh, and a sentence saying why.

The decision is pure and ordered: hard skips first (a pod on the host network, a Windows pod, a
system namespace, the injector's own namespace), then the pod's own opt-out, then the
namespace. The reason is for people (``meshinject check``, the webhook's warning); the code is
a short label for metrics, so dashboards can count skips by cause without parsing sentences.

A ``meshinject.io/inject`` value other than true/false (enabled/disabled) is read as absent by
``decide``, which never raises; :func:`flag_errors` reports it, and the callers that admit or
inject a pod refuse it (``injector.core.patch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.contract import INJECT, NAMESPACE_ENABLED, SYSTEM_NAMESPACES
from mesh.errors import AnnotationError
from mesh.settings import MeshConfig

_YES = ("true", "enabled")
_NO = ("false", "disabled")
OS_LABEL = "kubernetes.io/os"  # the well-known node label the scheduler matches
# the reason when the caller vouches for the namespace (namespace_labels=None)
REQUESTED = "injection was requested for this pod"
OFFLINE = ("meshinject inject -f is the opt-in: the namespace's labels are not known offline; "
           "pass --namespace-label to judge as the webhook would")


@dataclass(frozen=True)
class Decision:
    inject: bool
    reason: str
    code: str


def _flag(values: Mapping[str, Any] | None) -> str | None:
    """The pod's meshinject.io/inject value, lower-cased, if it is one we understand."""
    if not isinstance(values, dict) or INJECT not in values:
        return None
    text = str(values[INJECT]).strip().lower()
    return text if text in (*_YES, *_NO) else None


def flag_errors(pod: Mapping[str, Any]) -> list[AnnotationError]:
    """A ``meshinject.io/inject`` label or annotation we cannot read, each named with its value:
    "maybe" must not quietly mean "whatever the namespace says"."""
    metadata = pod.get("metadata") or {}
    errors = []
    for where in ("label", "annotation"):
        values = metadata.get(f"{where}s")
        if isinstance(values, dict) and INJECT in values:
            value = values[INJECT]
            if str(value).strip().lower() not in (*_YES, *_NO):
                errors.append(AnnotationError(INJECT, str(value), "expected true or false "
                                              "(or enabled/disabled)", where=where))
    return errors


def _windows(spec: Mapping[str, Any]) -> str | None:
    """How the pod says it runs on Windows nodes, or None."""
    os_field = spec.get("os")
    if isinstance(os_field, dict) and str(os_field.get("name", "")).lower() == "windows":
        return "spec.os.name: windows"
    selector = spec.get("nodeSelector")
    if isinstance(selector, dict) and str(selector.get(OS_LABEL, "")).lower() == "windows":
        return f"nodeSelector {OS_LABEL}: windows"
    return None


def decide(
    pod: Mapping[str, Any],
    *,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    config: MeshConfig,
    requested: str = REQUESTED,
) -> Decision:
    """Decide for one pod (or pod template).

    ``namespace_labels`` is None when the caller already knows the namespace wants injection:
    the webhook (the API server's namespaceSelector matched) and offline ``inject`` (the user
    piped the manifest through us on purpose); ``requested`` is then the reason given, unless
    the pod opts in itself.
    """
    spec = pod.get("spec") or {}
    metadata = pod.get("metadata") or {}
    if spec.get("hostNetwork") is True:
        return Decision(False, "the pod uses the host network (hostNetwork: true), so capturing "
                        "its traffic would capture the node's", "host-network")
    if (how := _windows(spec)) is not None:
        return Decision(False, f"the pod runs on Windows ({how}), where mesh-init's iptables "
                        "rules and the Linux proxy cannot run", "windows")
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
    opt_in = None
    if label in _YES or annotation in _YES:
        where = "label" if label in _YES else "annotation"
        opt_in = Decision(True, f"the pod opts in with {where} {INJECT}=true", "injected")
    if namespace_labels is None:
        return opt_in or Decision(True, requested, "injected")
    if namespace_labels.get(INJECT) == NAMESPACE_ENABLED:
        return Decision(True, f"namespace {namespace} has label {INJECT}={NAMESPACE_ENABLED}",
                        "injected")
    if opt_in is not None:
        return opt_in
    return Decision(False, f"namespace {namespace} does not have label "
                    f"{INJECT}={NAMESPACE_ENABLED} and the pod does not opt in",
                    "namespace-not-enabled")
