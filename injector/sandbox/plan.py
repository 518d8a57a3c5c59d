"""Manifest -> sandbox plan: inject every pod, expand workloads to pods, resolve Services.

This is what a cluster does between ``kubectl apply`` and the kubelet: controllers stamp pods
out of templates, the webhook injects them, Services get a virtual address and endpoints from
their selectors. Everything is checked here, before anything starts: a container whose program
does not exist on this machine, or a bad annotation, fails the plan with a message naming it.
Namespace labels are ignored, as in ``meshinject inject``: a pod is injected unless it opts out.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from injector.core.patch import inject_pod
from injector.sandbox import images, podspec
from injector.sandbox.model import (
    POD_LIMIT,
    ContainerPlan,
    PodPlan,
    Probe,
    SandboxPlan,
    ServicePlan,
    ServicePort,
    Volume,
    pod_address,
    vip_address,
)
from mesh.contract import CA_CONFIGMAP, CA_FILE
from mesh.errors import MeshError, SandboxError
from mesh.settings import MeshConfig

_REPLICATED = ("Deployment", "ReplicaSet", "ReplicationController", "StatefulSet")


def _templates(doc: Mapping[str, Any], *, max_replicas: int) -> tuple[list[tuple[str, Any]], str]:
    """(pod name, pod template) for each pod a workload makes, and a note if replicas were cut."""
    kind, meta = doc.get("kind"), doc.get("metadata") or {}
    name = str(meta.get("name") or meta.get("generateName", "pod").rstrip("-"))
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return [(name, doc)], ""
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        kind = "Job"
    if kind in _REPLICATED or kind in ("Job", "DaemonSet"):
        template = spec.get("template") or {}
        wanted = 1 if kind == "DaemonSet" else spec.get("parallelism", spec.get("replicas", 1))
        wanted = int(wanted if wanted is not None else 1)
        count = min(wanted, max_replicas)
        note = f"{kind} {name}: runs {count} of {wanted} replicas" if count < wanted else ""
        return [(f"{name}-{i}", template) for i in range(count)], note
    return [], ""


def _env(container: Mapping[str, Any], *, pod: Mapping[str, str]) -> dict[str, str]:
    """The container's env: values, and the downward-API fields a sandbox can know."""
    env = {"PATH": images.container_path(), "HOME": "/root", "HOSTNAME": pod["name"]}
    fields = {"metadata.name": pod["name"], "metadata.namespace": pod["namespace"],
              "status.podIP": pod["address"], "spec.nodeName": "sandbox",
              "status.hostIP": pod["address"],
              "spec.serviceAccountName": pod["service_account"]}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = podspec.expand(str(item["value"]), env)
            continue
        ref = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        env[item["name"]] = fields.get(str(ref), "")
    return env


def _probe(spec: Mapping[str, Any] | None, ports: Mapping[str, int]) -> Probe | None:
    if not spec:
        return None
    body = spec.get("httpGet") or spec.get("tcpSocket")
    if not body:
        return None  # exec and grpc probes are not checked in the sandbox
    port = body.get("port")
    port = ports.get(port, 0) if isinstance(port, str) else int(port)
    kind: Literal["http", "tcp"] = "http" if "httpGet" in spec else "tcp"
    return Probe(kind=kind, port=port, path=str(body.get("path", "/")))


def _container(
    c: Mapping[str, Any], *, role: str, pod: Mapping[str, str], security: Mapping[str, Any],
    config: MeshConfig, volumes: set[str],
) -> ContainerPlan:
    where = f"pod {pod['name']!r}, container {c.get('name')!r}"
    env = _env(c, pod=pod)
    sc = {**security, **(c.get("securityContext") or {})}
    ports = {p["name"]: int(p["containerPort"]) for p in c.get("ports") or [] if "name" in p}
    mounts = [(str(m["name"]), str(m["mountPath"])) for m in c.get("volumeMounts") or []
              if m.get("name") in volumes]
    return ContainerPlan(
        name=str(c["name"]), role=role, image=str(c.get("image", "")),  # type: ignore[arg-type]
        argv=images.resolve_argv(c, where=where, config=config, env=env), env=env,
        uid=sc.get("runAsUser"), gid=sc.get("runAsGroup"), workdir=c.get("workingDir", "/"),
        startup_probe=_probe(c.get("startupProbe"), ports),
        readiness_probe=_probe(c.get("readinessProbe"), ports),
        ports=[int(p["containerPort"]) for p in c.get("ports") or []
               if p.get("protocol", "TCP") == "TCP" and "containerPort" in p],
        mounts=mounts,
    )


def _volumes(spec: Mapping[str, Any], *, pod: str, notes: list[str]) -> list[Volume]:
    """The volumes the sandbox makes, as a kubelet would: a projected ServiceAccount token, the
    mesh root's ConfigMap, an emptyDir. Any other kind is left out, with a note."""
    made: list[Volume] = []
    for item in spec.get("volumes") or []:
        name = str(item.get("name"))
        sources = (item.get("projected") or {}).get("sources") or []
        token = next((s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s),
                     None)
        if token is not None and len(sources) == 1:
            made.append(Volume(name=name, kind="token", audience=str(token.get("audience", "")),
                               seconds=int(token.get("expirationSeconds", 3600)),
                               path=str(token.get("path", "token"))))
        elif (item.get("configMap") or {}).get("name") == CA_CONFIGMAP:
            made.append(Volume(name=name, kind="ca-root", path=CA_FILE))
        elif "emptyDir" in item:
            made.append(Volume(name=name, kind="empty"))
        else:
            notes.append(f"pod {pod}: volume {name!r} is not modelled by the sandbox")
    return made


def _pod(name: str, template: Mapping[str, Any], *, namespace: str, index: int,
         config: MeshConfig, notes: list[str]) -> tuple[PodPlan, Mapping[str, Any]]:
    meta = dict(template.get("metadata") or {})
    meta.update(name=name, namespace=namespace)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}}
    try:
        result = inject_pod(pod, config=config, namespace=namespace, namespace_labels=None)
    except MeshError as err:
        raise SandboxError(f"pod {name!r}: {err}") from err
    spec = result.pod["spec"]
    account = str(spec.get("serviceAccountName") or "default")
    info = {"name": name, "namespace": namespace, "address": pod_address(index),
            "service_account": account}
    volumes = _volumes(spec, pod=f"{namespace}/{name}", notes=notes)
    known = {v.name for v in volumes}
    security = {k: v for k, v in (spec.get("securityContext") or {}).items()
                if k in ("runAsUser", "runAsGroup")}
    containers = [
        _container(c, role="sidecar" if c.get("restartPolicy") == "Always" else "init",
                   pod=info, security=security, config=config, volumes=known)
        for c in spec.get("initContainers") or []
    ] + [_container(c, role="app", pod=info, security=security, config=config, volumes=known)
         for c in spec.get("containers") or []]
    injected_meta = result.pod.get("metadata") or {}
    plan = PodPlan(
        name=name, namespace=namespace, labels=dict(meta.get("labels") or {}),
        annotations={str(k): str(v) for k, v in (injected_meta.get("annotations") or {}).items()},
        service_account=account, uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{name}")),
        volumes=volumes,
        address=info["address"], injected=result.decision.inject, reason=result.decision.reason,
        restart_policy=spec.get("restartPolicy", "Always"), containers=containers,
    )
    return plan, spec


def _service(doc: Mapping[str, Any], *, namespace: str, index: int,
             pods: list[tuple[PodPlan, Mapping[str, Any]]]) -> ServicePlan:
    spec, name = doc.get("spec") or {}, str(doc["metadata"]["name"])
    selector = spec.get("selector") or {}
    behind = [(p, s) for p, s in pods if p.namespace == namespace and selector
              and all(p.labels.get(k) == v for k, v in selector.items())]
    named = {port["name"]: int(port["containerPort"]) for _, s in behind[:1]
             for c in s.get("containers") or [] for port in c.get("ports") or [] if "name" in port}
    ports = []
    for item in spec.get("ports") or []:
        target = item.get("targetPort", item["port"])
        target = named.get(target, 0) if isinstance(target, str) else int(target)
        ports.append(ServicePort(port=int(item["port"]), target_port=target or int(item["port"]),
                                 name=str(item.get("name", ""))))
    headless = spec.get("clusterIP") == "None"
    return ServicePlan(name=name, namespace=namespace, vip=None if headless else vip_address(index),
                       ports=ports, endpoints=[p.address for p, _ in behind])


def build_plan(documents: Iterable[Any], *, config: MeshConfig, namespace: str = "default",
               max_replicas: int = 3) -> SandboxPlan:
    """The pods and Services of a manifest's documents (``List``s flattened), injected."""
    docs: list[Mapping[str, Any]] = []
    for doc in documents:
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            docs.extend(d for d in doc.get("items") or [] if isinstance(d, Mapping))
        elif isinstance(doc, Mapping):
            docs.append(doc)
    pods: list[tuple[PodPlan, Mapping[str, Any]]] = []
    notes: list[str] = []
    for doc in docs:
        ns = str((doc.get("metadata") or {}).get("namespace") or namespace)
        made, note = _templates(doc, max_replicas=max_replicas)
        notes += [note] if note else []
        for name, template in made:
            if len(pods) >= POD_LIMIT:
                raise SandboxError(f"the sandbox runs at most {POD_LIMIT} pods")
            pods.append(_pod(name, template, namespace=ns, index=len(pods), config=config,
                             notes=notes))
    keys = [(p.namespace, p.name) for p, _ in pods]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise SandboxError(f"two pods are named {dup[1]!r} in namespace {dup[0]!r}")
    services = [
        _service(doc, namespace=str((doc.get("metadata") or {}).get("namespace") or namespace),
                 index=i, pods=pods)
        for i, doc in enumerate(d for d in docs if d.get("kind") == "Service")
    ]
    if not pods:
        raise SandboxError("the manifest has no pods or workloads to run")
    return SandboxPlan(pods=[p for p, _ in pods], services=services, notes=notes,
                       control_plane_host=config.control_plane.address.rpartition(":")[0],
                       mesh_config=config.model_dump(mode="json", by_alias=True))
