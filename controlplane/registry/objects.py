"""Kubernetes objects (as the API server sends them) -> the control plane's model values.

Both registries speak Kubernetes JSON: the cluster's watches deliver Services, EndpointSlices,
Pods and the mesh ConfigMap, and the sandbox writes the same shapes to a file. Pure.

- A Service becomes a :class:`Service` with its TCP ports (UDP and SCTP are never captured);
  ``traffic.meshinject.io/load-balancer: least-request`` picks least-request balancing.
- EndpointSlices (several per Service) become one tuple of :class:`Endpoint`, with the slice's
  port names, so each Service port finds its target port.
- A Pod becomes a :class:`Workload` only once injected (its status annotation says so) and once
  it has an address; its HTTP and gRPC probes are kept as (port, path).
- A Namespace keeps its labels (its mutual TLS mode is one).
- An AccessPolicy is parsed by :func:`mesh.access.parse_policy`; one that does not parse raises
  :class:`~mesh.errors.PolicyError` naming every problem, and the registries ignore it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controlplane.model.state import Change, MeshState
from controlplane.model.values import (
    Endpoint,
    Key,
    LbPolicy,
    Namespace,
    Service,
    ServicePort,
    Workload,
)
from mesh.contract import CONFIG_KEY, LOAD_BALANCER, OUR_PREFIXES, STATUS
from mesh.errors import SettingsError
from mesh.settings import MeshConfig, config_from_yaml

Obj = Mapping[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # on every EndpointSlice: whose it is
_LB = {"round-robin": "ROUND_ROBIN", "least-request": "LEAST_REQUEST"}
_PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
GRPC_HEALTH_PATH = "/grpc.health.v1.Health/Check"  # what the kubelet's gRPC probe calls


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):  # a malformed object must not stop a watch
        meta = {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def service(obj: Obj) -> Service | None:
    """The mesh's view of a Service; None for one it cannot route (ExternalName)."""
    spec = obj.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    namespace, name = key_of(obj)
    cluster_ip = spec.get("clusterIP")
    if cluster_ip in (None, "", "None"):
        cluster_ip = None
    ports = tuple(
        ServicePort(port=int(p["port"]), name=str(p.get("name") or ""),
                    protocol=str(p.get("protocol") or "TCP"),
                    app_protocol=str(p.get("appProtocol") or ""))
        for p in spec.get("ports") or [] if isinstance(p.get("port"), int)
    )
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    lb: LbPolicy = _LB.get(str(annotations.get(LOAD_BALANCER, "")).strip().lower(),
                           "ROUND_ROBIN")  # type: ignore[assignment]
    return Service(namespace, name, cluster_ip, ports, lb)


def endpoints(slices: Iterable[Obj]) -> tuple[Endpoint, ...]:
    """Every endpoint of a Service's slices, with the slices' port names; addresses that appear
    in two slices (a slice being replaced) count once."""
    found: dict[tuple[str, tuple[tuple[str, int], ...]], Endpoint] = {}
    for item in slices:
        ports = tuple(sorted((str(p.get("name") or ""), int(p["port"]))
                             for p in item.get("ports") or []
                             if isinstance(p.get("port"), int)
                             and (p.get("protocol") or "TCP") == "TCP"))
        for entry in item.get("endpoints") or []:
            conditions = entry.get("conditions") or {}
            ready = conditions.get("ready") is not False  # absent means ready
            serving = conditions.get("serving", ready) is not False
            terminating = conditions.get("terminating") is True
            pod = (entry.get("targetRef") or {}).get("name")
            for address in entry.get("addresses") or []:
                endpoint = Endpoint(str(address), ports, ready, serving, terminating,
                                    str(pod) if pod else None)
                key = (endpoint.address, ports)
                if key not in found or endpoint.ready:
                    found[key] = endpoint
    return tuple(sorted(found.values(), key=lambda e: (e.address, e.ports)))


def slice_owner(obj: Obj) -> Key:
    """The Service an EndpointSlice belongs to."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return (key_of(obj)[0], str(labels.get(SERVICE_NAME_LABEL, "")))


def workload(obj: Obj) -> Workload | None:
    """An injected pod with an address, as the control plane needs it; None otherwise."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    annotations = meta.get("annotations") or {}
    if STATUS not in annotations or meta.get("deletionTimestamp"):
        return None
    ours = tuple(sorted((k, str(v)) for k, v in annotations.items()
                        if isinstance(k, str) and k.startswith(OUR_PREFIXES)))
    ports = tuple(sorted({int(p["containerPort"]) for c in spec.get("containers") or []
                          for p in c.get("ports") or []
                          if isinstance(p.get("containerPort"), int)}))
    return Workload(
        namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""), ip=str(status.get("podIP") or ""),
        service_account=str(spec.get("serviceAccountName") or "default"),
        labels=tuple(sorted((meta.get("labels") or {}).items())), annotations=ours,
        container_ports=ports, probes=probes(spec),
    )


def probes(spec: Obj) -> tuple[tuple[int, str], ...]:
    """(port, path) of every HTTP and gRPC probe of the app's containers, named ports resolved;
    a probe with its own ``host`` goes elsewhere and is not the proxy's business."""
    found: set[tuple[int, str]] = set()
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        named = {str(p.get("name")): p.get("containerPort") for p in container.get("ports") or []
                 if p.get("name")}
        for kind in _PROBES:
            probe = container.get(kind) or {}
            if (get := probe.get("httpGet")) and not get.get("host"):
                port = named.get(str(get.get("port")), get.get("port"))
                path = str(get.get("path") or "/")
            elif grpc := probe.get("grpc"):
                port, path = grpc.get("port"), GRPC_HEALTH_PATH
            else:
                continue
            if isinstance(port, str) and port.isdigit():
                port = int(port)
            if isinstance(port, int):
                found.add((port, path.split("?", 1)[0]))
    return tuple(sorted(found))


def namespace(obj: Obj) -> Namespace:
    meta = obj.get("metadata") or {}
    return Namespace(str(meta.get("name") or ""),
                     tuple(sorted((str(k), str(v)) for k, v in (meta.get("labels") or {}).items())))


def mesh_config(obj: Obj | None) -> MeshConfig:
    """The mesh ConfigMap's config; the defaults when it is absent (never a crash: a bad one
    is logged by the caller, which keeps the last good config)."""
    if obj is None:
        return MeshConfig()
    data = obj.get("data") or {}
    text = data.get(CONFIG_KEY)
    if text is None:
        raise SettingsError(f"configmap has no {CONFIG_KEY} key")
    return config_from_yaml(str(text))


def grouped_slices(slices: Iterable[Obj]) -> dict[Key, list[Obj]]:
    """EndpointSlices by the Service they belong to."""
    groups: dict[Key, list[Obj]] = {}
    for item in slices:
        owner = slice_owner(item)
        if owner[1]:
            groups.setdefault(owner, []).append(item)
    return groups



def changes(objects: Iterable[Obj], *, previous: MeshState | None = None
            ) -> tuple[MeshState, list[Change]]:
    """A whole set of objects (a sandbox's list) as a state, and the changes from
    ``previous`` to it."""
    services: dict[Key, Service] = {}
    slices: list[Obj] = []
    workloads: dict[Key, Workload] = {}
    namespaces: dict[Key, Namespace] = {}
    config = MeshConfig()
    for obj in objects:
        kind = obj.get("kind")
        if kind == "Service" and (found := service(obj)) is not None:
            services[found.key] = found
        elif kind == "EndpointSlice":
            slices.append(obj)
        elif kind == "Pod" and (pod := workload(obj)) is not None:
            workloads[pod.key] = pod
        elif kind == "Namespace":
            found_ns = namespace(obj)
            namespaces[("", found_ns.name)] = found_ns
        elif kind == "ConfigMap":
            config = mesh_config(obj)
    eps = {k: endpoints(v) for k, v in grouped_slices(slices).items()}
    state = MeshState(config=config, services=services, endpoints=eps, workloads=workloads,
                      namespaces=namespaces)
    old = previous or MeshState()
    out: list[Change] = []
    if state.config != old.config:
        out.append(Change("config", value=state.config))
    for kind, new_table, old_table in (("service", services, old.services),
                                       ("endpoints", eps, old.endpoints),
                                       ("workload", workloads, old.workloads),
                                       ("namespace", namespaces, old.namespaces)):
        for k in new_table.keys() | old_table.keys():
            if new_table.get(k) != old_table.get(k):
                out.append(Change(kind, k, new_table.get(k)))  # type: ignore[arg-type]
    return state, out
