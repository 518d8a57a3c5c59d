"""The proxy as the injector renders it: inject a pod, take mesh-init's and mesh-proxy's specs.

The real-Envoy tests run exactly what a pod would run (the bootstrap, flags, preStop hook and
capture args of the injected spec), so they test the product, not a copy of its parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from injector.core.patch import inject_pod
from mesh.settings import MeshConfig
from tests.support.meshcontrol import LAB_CONFIG


@dataclass(frozen=True)
class Spec:
    init_args: list[str]
    proxy_args: list[str]
    uid: int
    gid: int
    pre_stop: list[str]
    annotations: dict[str, str]


def inject(annotations: dict[str, str], *, config: MeshConfig | None = None) -> Spec:
    """The injected spec of a pod with ``annotations``; the control plane it dials is the lab's
    (:data:`LAB_CONFIG`) unless ``config`` says otherwise."""
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "l7", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    injected = inject_pod(pod, config=config or LAB_CONFIG, namespace="l7").pod
    spec = injected["spec"]
    containers = {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}
    init, proxy = containers["mesh-init"], containers["mesh-proxy"]
    assert init["command"] == ["meshinject-init"] and proxy["command"] == ["envoy"]
    security = proxy["securityContext"]
    return Spec(
        init_args=init["args"],
        proxy_args=proxy["args"],
        uid=security["runAsUser"],
        gid=security["runAsGroup"],
        pre_stop=proxy["lifecycle"]["preStop"]["exec"]["command"],
        annotations=annotations,
    )


def boot(**annotations: str) -> Spec:
    """``boot(**{tp.TIMEOUT: "200ms"})``: the spec of a pod with these annotations."""
    return inject(annotations)
