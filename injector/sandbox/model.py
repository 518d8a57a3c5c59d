"""The sandbox plan: what runs where, as plain values written to the state directory.

The CLI plans (manifest -> injected pods -> these values) and the supervisor executes the plan it
reads back from disk, so the two never share memory and ``status``/``down`` can read it too.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict

NODE_ADDRESS = "198.18.0.1"  # the bridge in the node namespace: every pod's gateway
POD_BASE = ipaddress.IPv4Address("198.18.0.10")
VIP_RANGE = "198.19.0.0/16"  # Service virtual addresses, DNATed by the node
VIP_BASE = ipaddress.IPv4Address("198.19.0.10")
BRIDGE = "br0"
POD_LIMIT = 60000


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Probe(_Model):
    """An httpGet or tcpSocket probe, reduced to what the sandbox checks."""

    kind: Literal["http", "tcp"]
    port: int
    path: str = "/"


class ContainerPlan(_Model):
    name: str
    role: Literal["init", "sidecar", "app"]
    image: str
    argv: list[str]
    env: dict[str, str]
    uid: int | None = None
    gid: int | None = None
    workdir: str = "/"
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    ports: list[int] = []  # declared TCP containerPorts: without a readiness probe, "ready"
    # in the sandbox means they accept connections (so `up` returns when the apps answer)
    mounts: list[tuple[str, str]] = []  # (volume name, mount path): the volumes it sees


class Volume(_Model):
    """A volume the sandbox can make: the kubelet's job for the few kinds meshed pods use."""

    name: str
    kind: Literal["token", "ca-root", "empty"]
    audience: str = ""  # token: who it is for
    seconds: int = 3600  # token: how long it lives
    path: str = ""  # token and ca-root: the file's name in the volume


class PodPlan(_Model):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    service_account: str = "default"
    uid: str = ""
    volumes: list[Volume] = []
    address: str
    injected: bool
    reason: str
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    containers: list[ContainerPlan]

    @property
    def key(self) -> str:
        """``name.namespace``: unique in a sandbox, and how the CLI names a pod."""
        return f"{self.name}.{self.namespace}"

    def netns(self, owner: int) -> str:
        """The pod's network namespace; ``owner`` is the supervisor's pid (see injector.netns)."""
        return f"mi-{owner}-{self.key}"


class ServicePort(_Model):
    port: int
    target_port: int
    name: str = ""


class ServicePlan(_Model):
    name: str
    namespace: str
    vip: str | None  # None: headless, the name resolves to the first endpoint
    ports: list[ServicePort]
    endpoints: list[str]  # pod addresses behind the selector

    def names(self, *, from_namespace: str | None) -> list[str]:
        full = [f"{self.name}.{self.namespace}", f"{self.name}.{self.namespace}.svc"]
        full.append(f"{self.name}.{self.namespace}.svc.cluster.local")
        return ([self.name] if from_namespace == self.namespace else []) + full


class SandboxPlan(_Model):
    pods: list[PodPlan]
    services: list[ServicePlan]
    notes: list[str] = []
    control_plane_host: str = ""  # the name proxies dial for xDS; the node answers it
    mesh_config: dict[str, object] = {}  # the config the pods were injected with, for the
    # control plane (as the cluster's ConfigMap would hold it)

    def pod(self, name: str) -> PodPlan | None:
        """A pod by ``name.namespace``, or when unambiguous by bare name or by its workload's
        name (``reviews`` for the one pod ``reviews-0``, as ``kubectl logs deploy/reviews``)."""
        for field in ("key", "name", "workload"):
            found = [p for p in self.pods
                     if (p.name.rsplit("-", 1)[0] if field == "workload" else getattr(p, field))
                     == name]
            if found:
                return found[0] if len(found) == 1 else None
        return None


def pod_address(index: int) -> str:
    return str(POD_BASE + index)


def vip_address(index: int) -> str:
    return str(VIP_BASE + index)
