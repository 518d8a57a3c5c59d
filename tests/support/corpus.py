"""Pods from the shared corpus, shaped the way the API server sends them on CREATE.

A controller creates pods from its template with ``generateName`` and often no namespace in the
pod's own metadata (the request carries it), so that is what the tests and the review get.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterator
from typing import Any

import yaml

from tests.support.paths import CORPUS

Obj = dict[str, Any]


def _templates(doc: Obj) -> Iterator[Obj]:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "List":
        for item in doc.get("items") or []:
            if isinstance(item, dict):
                yield from _templates(item)
    elif kind == "Pod":
        yield doc
    elif kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
        if template:
            yield {"metadata": template.get("metadata") or {}, "spec": template["spec"]}
    elif kind in (
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "ReplicationController",
    ) and spec.get("template"):
        template = spec["template"]
        pod_spec = copy.deepcopy(template["spec"])
        for claim in spec.get("volumeClaimTemplates") or []:
            # the StatefulSet controller adds a volume per claim template to each pod it makes
            # (replacing a volume of the same name, as the controller does)
            name = (claim.get("metadata") or {}).get("name", "data")
            volumes = [v for v in pod_spec.get("volumes") or [] if v.get("name") != name]
            pod_spec["volumes"] = [
                *volumes, {"name": name, "persistentVolumeClaim": {"claimName": f"{name}-0"}}
            ]
        yield {"metadata": template.get("metadata") or {}, "spec": pod_spec}


def as_created(template: Obj, *, name: str) -> Obj:
    """The pod a controller would POST for ``template``: generateName, no namespace."""
    meta = copy.deepcopy(template.get("metadata") or {})
    meta.pop("namespace", None)
    meta.pop("name", None)
    meta["generateName"] = f"{name}-"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": copy.deepcopy(template["spec"]),
    }


def _dns_label(text: str) -> str:
    """A name the API server takes (RFC 1123), as a controller's would be: from a file name."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower())[:40].strip("-") or "pod"


def corpus_pods() -> list[tuple[str, Obj]]:
    """(file:index, pod) for every pod or pod template in the corpus."""
    found: list[tuple[str, Obj]] = []
    for path in sorted(CORPUS.glob("*.y*ml")):
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        except yaml.YAMLError:
            continue
        for i, template in enumerate(t for d in docs for t in _templates(d)):
            name = (template.get("metadata") or {}).get("name") or path.stem
            found.append((f"{path.name}:{i}", as_created(template, name=_dns_label(str(name)))))
    return found


def admission_review(
    pod: Obj,
    *,
    namespace: str = "default",
    operation: str = "CREATE",
    uid: str | None = None,
    kind: str = "Pod",
) -> Obj:
    """An AdmissionReview v1 as the API server sends it for a pod."""
    resource = "pods" if kind == "Pod" else kind.lower() + "s"
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "requestResource": {"group": "", "version": "v1", "resource": resource},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
