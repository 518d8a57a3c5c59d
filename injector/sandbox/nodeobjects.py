"""The objects the sandbox node writes about itself: its Node, its Lease, and the ``kubernetes``
Service's endpoint (the relay it runs to the API server). Pure.

A kubelet registers its Node with what the scheduler needs (capacity and allocatable, a Ready
condition, its address and the port of its own API), renews a Lease in ``kube-node-lease`` every
few seconds (the node lifecycle controller's heartbeat: a node whose Lease is older than the
grace period is marked NotReady and its pods evicted), and refreshes the Node's conditions less
often. The API server runs with ``--endpoint-reconciler-type=none`` (a loopback advertise
address is refused otherwise), so the ``kubernetes`` Service has no endpoint unless someone
writes one: the node writes its relay's, which pods and kube-proxy can reach.
"""

from __future__ import annotations

import time
from typing import Any

Obj = dict[str, Any]
LEASE_SECONDS = 40
LEASE_NAMESPACE = "kube-node-lease"
KUBELET_PORT = 10250
RELAY_PORT = 6443  # the node's relay to the API server (the `kubernetes` Service's endpoint)
MANAGED_BY = "sandbox-node.meshinject.io"
VERSION = "v1.37.2"


def micro(seconds: float) -> str:
    """A MicroTime, as Leases carry it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + \
        f".{int(seconds % 1 * 1e6):06d}Z"


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def node_status(*, address: str, cpus: int, memory: int, now: float, max_pods: int) -> Obj:
    resources = {"cpu": str(cpus), "memory": f"{memory // 1024}Ki", "pods": str(max_pods),
                 "ephemeral-storage": "10Gi"}
    fine = [("MemoryPressure", "KubeletHasSufficientMemory"),
            ("DiskPressure", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "KubeletHasSufficientPID")]
    conditions = [{"type": kind, "status": "False", "reason": reason,
                   "message": "the sandbox node does not measure it",
                   "lastHeartbeatTime": _stamp(now), "lastTransitionTime": _stamp(now)}
                  for kind, reason in fine]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "the sandbox node agent is posting ready status",
                       "lastHeartbeatTime": _stamp(now), "lastTransitionTime": _stamp(now)})
    return {
        "capacity": resources, "allocatable": resources, "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": address}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": {"kubeletVersion": VERSION, "kubeProxyVersion": "", "operatingSystem":
                     "linux", "architecture": "amd64", "containerRuntimeVersion":
                     "sandbox://meshinject", "osImage": "the meshinject sandbox",
                     "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
    }


def node(name: str, *, pod_cidr: str, address: str, cpus: int, memory: int, now: float,
         max_pods: int) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "node.meshinject.io/sandbox": "true"}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": node_status(address=address, cpus=cpus, memory=memory, now=now,
                              max_pods=max_pods),
    }


def kept_transitions(fresh: Obj, stored: Obj) -> Obj:
    """``fresh``'s conditions with the stored ``lastTransitionTime`` where the status held."""
    before = {c.get("type"): c for c in (stored.get("status") or {}).get("conditions") or []}
    for condition in fresh.get("conditions") or []:
        old = before.get(condition["type"])
        if old and old.get("status") == condition["status"]:
            condition["lastTransitionTime"] = old.get("lastTransitionTime",
                                                      condition["lastTransitionTime"])
    return fresh


def lease(name: str, *, node_uid: str, now: float) -> Obj:
    return {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}]},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
                 "renewTime": micro(now)},
    }


def api_endpoints(address: str) -> Obj:
    """``default/kubernetes`` Endpoints naming the relay; not mirrored (the slice is ours)."""
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address}],
                     "ports": [{"name": "https", "port": RELAY_PORT, "protocol": "TCP"}]}],
    }


def api_slice(address: str) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {
            "kubernetes.io/service-name": "kubernetes",
            "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": RELAY_PORT, "protocol": "TCP"}],
    }
