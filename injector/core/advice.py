"""Warnings for a pod we inject: settings that are valid one by one but will not do, together,
what the user expects.

Admission still allows the pod (each value is fine, and the user may know better); the webhook
puts these in the AdmissionReview's ``warnings`` (kubectl prints them), ``meshinject inject``
and ``check`` print them too. Pure: the pod and its overrides in, sentences out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mesh.contract import DRAIN_TIME
from mesh.overrides.pod import PodOverrides

DEFAULT_GRACE_SECONDS = 30  # the API server's default terminationGracePeriodSeconds


def warnings(pod: Mapping[str, Any], overrides: PodOverrides) -> tuple[str, ...]:
    """Every warning for this pod, in a stable order; empty when all is well."""
    found = [_drain_outlasts_grace(pod, overrides)]
    return tuple(w for w in found if w)


def _drain_outlasts_grace(pod: Mapping[str, Any], overrides: PodOverrides) -> str | None:
    """The proxy's preStop drain must end inside the pod's grace period: the kubelet kills
    whatever still runs when it ends, and requests still in flight on the proxy are lost."""
    spec = pod.get("spec") or {}
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is None:
        grace = DEFAULT_GRACE_SECONDS
    if not isinstance(grace, int) or isinstance(grace, bool):
        return None  # not ours to judge: the API server validates it
    drain = overrides.traffic.drain_seconds
    if drain == 0 or drain < grace:
        return None
    annotated = any(key == DRAIN_TIME for key, _ in overrides.proxy_annotations)
    source = DRAIN_TIME if annotated else "the mesh config's proxy.drainSeconds"
    return (f"the proxy's drain time is {drain}s ({source}) but terminationGracePeriodSeconds "
            f"is {grace}s: the kubelet will stop the proxy before its drain ends; give the pod "
            f"a grace period above {drain}s")
