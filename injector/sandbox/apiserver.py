"""What the sandbox does in place of a cluster's API server, for the control plane and proxies.

- It keeps the keys: a ServiceAccount token signing key and the mesh root, made once per
  sandbox in ``STATE/pki`` (the control plane is given the public key and the root).
- It mints each pod's projected ServiceAccount token, with the claims the API server would
  give it (service account, pod name and uid, audience, expiry), and writes the volumes the
  injected pods mount: the token, the root's ConfigMap, emptyDirs.
- It publishes the mesh to the control plane as a ``List`` of Kubernetes objects in
  ``STATE/registry.json`` (the mesh ConfigMap, Services, one EndpointSlice per Service with
  each pod's readiness, the injected Pods), replaced in one rename when anything changes;
  objects applied while it runs (:func:`apply`: an edited mesh ConfigMap, an AccessPolicy)
  are laid over them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from injector.sandbox.model import PodPlan, SandboxPlan, ServicePlan
from injector.sandbox.state import StateDir, read_json, write_json
from mesh.contract import BOOTSTRAP_FILE, CONFIG_KEY, CONFIGMAP, INJECTOR_NAMESPACE, STATUS
from mesh.pki import certs, jwt

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class Keys:
    """The sandbox's token signing key and mesh root, made on first use."""

    def __init__(self, state: StateDir) -> None:
        self.dir = state.root / "pki"
        self.token_key_file = self.dir / "sa.key"
        self.token_pub_file = self.dir / "sa.pub"
        self.ca_cert_file = self.dir / "ca.crt"
        self.ca_key_file = self.dir / "ca.key"

    def ensure(self) -> None:
        if self.ca_cert_file.exists() and self.token_key_file.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        _private(self.token_key_file, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self.token_pub_file.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        root = certs.generate_ca("meshinject sandbox mesh root", days=30)
        _private(self.ca_key_file, root.key_pem)
        self.ca_cert_file.write_bytes(root.cert_pem)

    def token_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.token_key_file.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def token(self, pod: PodPlan, *, audience: str, seconds: int) -> str:
        now = int(time.time())
        claims = {
            "iss": "meshinject-sandbox", "sub": f"system:serviceaccount:{pod.namespace}:"
                                                f"{pod.service_account}",
            "aud": [audience], "iat": now, "nbf": now, "exp": now + seconds,
            "kubernetes.io": {"namespace": pod.namespace,
                              "pod": {"name": pod.name, "uid": pod.uid},
                              "serviceaccount": {"name": pod.service_account}},
        }
        return jwt.mint(claims, self.token_key())


def _private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)


def volume_dir(state: StateDir, pod: PodPlan, name: str) -> Path:
    return state.root / "volumes" / pod.key / name


def write_volumes(state: StateDir, pod: PodPlan, keys: Keys, *, bootstrap: str) -> None:
    """Make the pod's volumes on disk (readable by its containers' users, as a kubelet's); the
    root's holds the proxies' shared ``bootstrap`` too, as the control plane publishes it."""
    for volume in pod.volumes:
        where = volume_dir(state, pod, volume.name)
        where.mkdir(parents=True, exist_ok=True)
        os.chmod(where, 0o755)
        if volume.kind == "token":
            target = where / volume.path
            target.write_text(keys.token(pod, audience=volume.audience, seconds=volume.seconds))
            os.chmod(target, 0o644)
        elif volume.kind == "ca-root":
            (where / volume.path).write_bytes(keys.ca_cert_file.read_bytes())
            (where / BOOTSTRAP_FILE).write_text(bootstrap)
            for name in (volume.path, BOOTSTRAP_FILE):
                os.chmod(where / name, 0o644)


def mounts(state: StateDir, pod: PodPlan, wanted: Iterable[tuple[str, str]]
           ) -> list[tuple[str, str]]:
    """A container's (host directory, mount path) pairs for its volume mounts."""
    return [(str(volume_dir(state, pod, name)), path) for name, path in wanted]


# -- the registry file ----------------------------------------------------------------------
def _service(service: ServicePlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service.name, "namespace": service.namespace},
        "spec": {"clusterIP": service.vip or "None",
                 "ports": [{"name": p.name, "port": p.port, "targetPort": p.target_port,
                            "protocol": "TCP"} for p in service.ports]},
    }


def _slice(service: ServicePlan, pods: Mapping[str, PodPlan], ready: Mapping[str, bool]
           ) -> dict[str, Any]:
    by_address = {p.address: p for p in pods.values()}
    endpoints = []
    for address in service.endpoints:
        pod = by_address.get(address)
        up = bool(pod and ready.get(pod.key))
        entry: dict[str, Any] = {"addresses": [address],
                                 "conditions": {"ready": up, "serving": up,
                                                "terminating": False}}
        if pod is not None:
            entry["targetRef"] = {"kind": "Pod", "name": pod.name, "namespace": pod.namespace}
        endpoints.append(entry)
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service.name}-sandbox", "namespace": service.namespace,
                     "labels": {SERVICE_NAME_LABEL: service.name}},
        "addressType": "IPv4",
        "ports": [{"name": p.name, "port": p.target_port, "protocol": "TCP"}
                  for p in service.ports],
        "endpoints": endpoints,
    }


def _pod(pod: PodPlan) -> dict[str, Any]:
    """The pod as the API server would show it, with what the control plane reads: its
    labels, annotations, service account, ports and HTTP probes (which a STRICT pod's proxy
    lets in)."""
    containers = []
    for container in pod.containers:
        if container.role != "app":
            continue
        entry: dict[str, Any] = {"name": container.name,
                                 "ports": [{"containerPort": p} for p in container.ports]}
        for field, probe in (("readinessProbe", container.readiness_probe),
                             ("startupProbe", container.startup_probe)):
            if probe is not None and probe.kind == "http":
                entry[field] = {"httpGet": {"port": probe.port, "path": probe.path}}
        containers.append(entry)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
                     "labels": pod.labels, "annotations": pod.annotations},
        "spec": {"serviceAccountName": pod.service_account, "containers": containers},
        "status": {"podIP": pod.address},
    }


def registry(plan: SandboxPlan, ready: Mapping[str, bool],
             applied: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The List of objects the control plane reads: what a cluster's watches would show. An
    ``applied`` object (:func:`apply`) replaces the one of the same kind, namespace and name
    (the mesh ConfigMap, edited) or is added (an AccessPolicy)."""
    pods = {p.key: p for p in plan.pods}
    items: list[dict[str, Any]] = [mesh_configmap(plan.mesh_config)]
    for service in plan.services:
        items += [_service(service), _slice(service, pods, ready)]
    items += [_pod(p) for p in plan.pods if STATUS in p.annotations]
    extra = {_key(obj): dict(obj) for obj in applied}
    items = [extra.pop(_key(obj), obj) for obj in items] + list(extra.values())
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name", ""))


def registry_path(state: StateDir) -> Path:
    return state.root / "registry.json"


def applied_path(state: StateDir) -> Path:
    return state.root / "applied.json"


def applied(state: StateDir) -> list[dict[str, Any]]:
    """The objects applied to the running sandbox, oldest first."""
    found = read_json(applied_path(state), [])
    return [obj for obj in found if isinstance(obj, dict)] if isinstance(found, list) else []


def apply(state: StateDir, obj: Mapping[str, Any]) -> None:
    """``kubectl apply`` for the sandbox: record ``obj`` (replacing one with the same kind,
    namespace and name); the supervisor publishes it to the control plane within a tick."""
    kept = [o for o in applied(state) if _key(o) != _key(obj)]
    write_json(applied_path(state), [*kept, dict(obj)])


def mesh_configmap(config: Mapping[str, Any]) -> dict[str, Any]:
    """The mesh ConfigMap holding ``config`` (MeshConfig as a dict)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": INJECTOR_NAMESPACE},
            "data": {CONFIG_KEY: yaml.safe_dump(dict(config))}}


def publish(state: StateDir, plan: SandboxPlan, ready: Mapping[str, bool]) -> None:
    write_json(registry_path(state), registry(plan, ready, applied(state)))
