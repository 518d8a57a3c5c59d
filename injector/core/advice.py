"""Warnings for a pod we inject: settings that are valid one by one but will not do, together,
what the user expects.

Admission still allows the pod (each value is fine, and the user may know better); the webhook
puts these in the AdmissionReview's ``warnings`` (kubectl prints them), ``meshinject inject``
and ``check`` print them too. Pure: the pod and its overrides in, sentences out.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from mesh.contract import DRAIN_TIME, KNOWN_ANNOTATIONS, PROXY_NATIVE_SIDECAR
from mesh.overrides.pod import PodOverrides

DEFAULT_GRACE_SECONDS = 30  # the API server's default terminationGracePeriodSeconds
_KNOWN = frozenset(KNOWN_ANNOTATIONS)
_BY_SUFFIX = {key.split("/", 1)[1]: key for key in KNOWN_ANNOTATIONS}


def warnings(pod: Mapping[str, Any], overrides: PodOverrides) -> tuple[str, ...]:
    """Every warning for this pod, in a stable order; empty when all is well."""
    found = [*_unknown_keys(overrides), _drain_outlasts_grace(pod, overrides),
             _classic_never_completes(pod, overrides)]
    return tuple(w for w in found if w)


def _unknown_keys(overrides: PodOverrides) -> list[str]:
    """A key under our prefixes that meshinject does not read is almost always a typo, which
    would otherwise be ignored without a word (``proxy.meshinject.io/retrys``). Not refused: a
    newer meshinject may know the key, and a manifest written for it must still start."""
    found = []
    for key, _ in overrides.proxy_annotations:
        if key in _KNOWN:
            continue
        suffix = key.split("/", 1)[1]
        close = difflib.get_close_matches(suffix, _BY_SUFFIX, n=1, cutoff=0.6)
        hint = f"did you mean {_BY_SUFFIX[close[0]]}?" if close else "see docs/proxy.md"
        found.append(f"annotation {key} is not one meshinject reads, so it changes nothing; "
                     f"{hint}")
    return found


def _classic_never_completes(pod: Mapping[str, Any], overrides: PodOverrides) -> str | None:
    """In classic mode the proxy is a regular container that never exits, so a pod that is
    meant to run to completion (a Job's, a CronJob's, any with restartPolicy Never or
    OnFailure) never does: the app's container ends, the proxy keeps the pod Running, and the
    Job never completes. A native sidecar is stopped by the kubelet once the app is done."""
    if overrides.native:
        return None
    spec = pod.get("spec") or {}
    policy = spec.get("restartPolicy")
    if policy not in ("Never", "OnFailure"):
        return None
    owners = (pod.get("metadata") or {}).get("ownerReferences")
    job = isinstance(owners, list) and any(
        isinstance(o, dict) and o.get("kind") == "Job" for o in owners)
    annotated = any(key == PROXY_NATIVE_SIDECAR for key, _ in overrides.proxy_annotations)
    source = f"{PROXY_NATIVE_SIDECAR}=false" if annotated else "the mesh config's nativeSidecars"
    what = "the Job's pod" if job else f"a pod with restartPolicy {policy} (a Job's, a CronJob's)"
    return (f"the proxy is a classic sidecar ({source}) and never exits, so {what} never "
            "completes; use native sidecars (Kubernetes 1.29+)")


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
