"""The world ``inspect`` and ``check`` are shown in: one pod per verdict they can give.

:func:`seed` builds it in the real local cluster, the way it would come about: namespaces
``shop`` and ``legacy``; ``reports`` created before ``shop`` was labelled (so the webhook never
saw it); ``payments`` created while the injector ran an older mesh config (changed in its
ConfigMap, the injector restarted on it, then both put back); the rest created through the
webhook, which injects or skips each as its selectors and the policy say. They are never bound
to a node (their scheduler is one nobody runs): the states inspect and check tell apart (a
proxy ready or not, its restarts) are patched in as a kubelet would write them, through the
pods' ``status`` subresource, so each case holds still. Pods that really run on the sandbox
node are :func:`tests.support.meshapp`'s.

:func:`seed_fake_proxy` is for the one thing the real cluster cannot be made to show: a proxy
that refused its config (a NACK, which needs a config Envoy refuses; the control plane derives
none from anything a user can write). The fake API server's pod proxy answers for a control
plane replica whose ``/debug/proxies`` lists one. ``STATS`` is a proxy's counters for the pure
summary's test.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import yaml

from injector.core.patch import render
from mesh.contract import CONFIG_KEY, CONFIGMAP, PROXY_NAME
from mesh.overrides.pod import parse_overrides
from mesh.settings import MeshConfig, config_from_yaml
from tests.support import kustomize
from tests.support.fakeserver import Running
from tests.support.kustomize import one
from tests.support.realcluster import NS, UNSCHEDULED, LocalCluster

Obj = dict[str, Any]
ENABLED = {"meshinject.io/inject": "enabled"}
STATS = """\
# TYPE envoy_server_live gauge
envoy_server_live{} 1
envoy_server_uptime{} 3605
envoy_server_memory_allocated{} 13002342
envoy_tcp_downstream_cx_total{envoy_tcp_prefix="inbound"} 1204
envoy_tcp_downstream_cx_active{envoy_tcp_prefix="inbound"} 3
envoy_tcp_downstream_cx_total{envoy_tcp_prefix="outbound"} 411
envoy_cluster_upstream_cx_total{envoy_cluster_name="inbound-passthrough"} 1204
envoy_cluster_upstream_cx_total{envoy_cluster_name="outbound-passthrough"} 411
envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name="outbound-passthrough"} 2
envoy_cluster_upstream_cx_total{envoy_cluster_name="blackhole"} 0
"""


def _pod(name: str, *, labels: Obj | None = None, annotations: Obj | None = None,
         host_network: bool = False) -> Obj:
    pod: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        # as the API server returns it: an empty map is omitted
        "metadata": {"name": name, "labels": {"app": name, **(labels or {})},
                     **({"annotations": annotations} if annotations else {})},
        "spec": {"containers": [
            {"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]},
    }
    if host_network:
        pod["spec"]["hostNetwork"] = True
    return pod


def _create(cluster: LocalCluster, ns: str, pod: Obj) -> None:
    pod = {**pod, "spec": {**pod["spec"], "schedulerName": UNSCHEDULED}}
    with cluster.api() as api:
        api.post(f"/api/v1/namespaces/{ns}/pods", json=pod).raise_for_status()


def _report(cluster: LocalCluster, ns: str, name: str, *, proxy_ready: bool | None,
            restarts: int = 0) -> None:
    """What a kubelet would write: the pod Running, its app ready, and its proxy's state."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    running = {"running": {"startedAt": now}}
    status: Obj = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0, "image":
                               "nginx:1.27", "imageID": "", "started": True, "state": running}],
    }
    if proxy_ready is not None:
        status["initContainerStatuses"] = [
            {"name": "mesh-init", "ready": True, "restartCount": 0, "image": "mesh-init",
             "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                     "startedAt": now, "finishedAt": now}}},
            {"name": PROXY_NAME, "ready": proxy_ready, "restartCount": restarts,
             "image": "envoy", "imageID": "", "started": True, "state": running},
        ]
    with cluster.api() as api:
        api.patch(f"/api/v1/namespaces/{ns}/pods/{name}/status", json={"status": status},
                  headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()


def _namespace(cluster: LocalCluster, name: str) -> None:
    with cluster.api() as api:
        api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": name}}).raise_for_status()
        deadline = time.monotonic() + 30
        while api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default").status_code != 200:
            assert time.monotonic() < deadline, f"no default ServiceAccount in {name}"
            time.sleep(0.05)


def _set_mesh_config(cluster: LocalCluster, text: str) -> None:
    patch = json.dumps({"data": {CONFIG_KEY: text}})
    cluster.kubectl("patch", "configmap", CONFIGMAP, "-n", NS, "--type=merge", "-p", patch)
    cluster.injector("restart")  # it reads its config at start, as from a mounted ConfigMap


def quiet(cluster: LocalCluster) -> None:
    """Wait until other tests' mesh-enabled namespaces have gone (``inspect -A`` lists every
    one): deleting a namespace takes the namespace controller a few seconds."""
    deadline = time.monotonic() + 90
    while True:
        with cluster.api() as api:
            items = api.get("/api/v1/namespaces").raise_for_status().json()["items"]
            opted = api.get("/api/v1/pods?labelSelector=meshinject.io%2Finject%3Dtrue").json()
        enabled = [n["metadata"]["name"] for n in items
                   if (n["metadata"].get("labels") or {}).get("meshinject.io/inject") == "enabled"]
        if not enabled and not opted["items"]:
            return
        assert time.monotonic() < deadline, f"still there: {enabled}, {len(opted['items'])} pods"
        time.sleep(0.5)


def seed(cluster: LocalCluster) -> MeshConfig:
    """Build the world (see the module's docstring); returns the mesh config in force."""
    quiet(cluster)
    current = cluster.kubectl("get", "configmap", CONFIGMAP, "-n", NS, "-o", "json").stdout
    text = json.loads(current)["data"][CONFIG_KEY]
    config = config_from_yaml(text)
    for ns in ("shop", "legacy"):
        _namespace(cluster, ns)
    _create(cluster, "shop", _pod("reports-68f9-bx4lp"))  # before the label: never reviewed
    cluster.kubectl("label", "namespace", "shop", "meshinject.io/inject=enabled")
    older = yaml.safe_load(text)
    older["proxy"]["concurrency"] = 2
    _set_mesh_config(cluster, yaml.safe_dump(older))
    try:
        _create(cluster, "shop", _pod("payments-7b5d-qq7zn"))
    finally:
        _set_mesh_config(cluster, text)
    _create(cluster, "shop", _pod("web-6d4b9-x2x9q"))
    _create(cluster, "shop", _pod(
        "cart-5f7c8-k8d2m", annotations={"traffic.meshinject.io/interception-mode": "TPROXY"}))
    _create(cluster, "shop", _pod("batch-0", labels={"meshinject.io/inject": "false"}))
    _create(cluster, "shop", _pod("node-agent-9zz", host_network=True))
    _create(cluster, "legacy", _pod("canary-1", labels={"meshinject.io/inject": "true"}))
    _create(cluster, "legacy", _pod("plain-1"))
    _create(cluster, "legacy", _pod("annotated-1", annotations={"meshinject.io/inject": "true"}))
    for ns, name, ready, restarts in (
        ("shop", "web-6d4b9-x2x9q", True, 0),
        ("shop", "cart-5f7c8-k8d2m", False, 3),
        ("shop", "payments-7b5d-qq7zn", True, 0),
        ("legacy", "canary-1", True, 0),
    ):
        _report(cluster, ns, name, proxy_ready=ready, restarts=restarts)
    for ns, name in (("shop", "reports-68f9-bx4lp"), ("shop", "batch-0"),
                     ("shop", "node-agent-9zz"), ("legacy", "plain-1"),
                     ("legacy", "annotated-1")):
        _report(cluster, ns, name, proxy_ready=None)
    return config


def unseed(cluster: LocalCluster) -> None:
    with cluster.api() as api:
        for ns in ("shop", "legacy"):
            api.delete(f"/api/v1/namespaces/{ns}")


# -- the fake, for a NACK --------------------------------------------------------------------
def _injected(pod: Obj, config: MeshConfig, *, ready: bool = True, restarts: int = 0) -> Obj:
    annotations = pod["metadata"].get("annotations") or {}
    out = render(copy.deepcopy(pod), config=config,
                 overrides=parse_overrides(annotations, config=config))
    out["metadata"]["namespace"] = "shop"
    out["status"] = {
        "phase": "Running",
        "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0}],
        "initContainerStatuses": [{"name": PROXY_NAME, "ready": ready,
                                   "restartCount": restarts}],
    }
    return out


def seed_fake_proxy(fake: Running) -> MeshConfig:
    """Three injected pods of ``shop`` (web synced, payments NACKing, cart not connected) and
    one control plane replica answering ``/debug/proxies`` through the pod proxy."""
    api = fake.api
    configmap = one(kustomize.render(), "ConfigMap", "meshinject-config")
    api.put(copy.deepcopy(configmap))
    config = config_from_yaml(configmap["data"]["mesh.yaml"])
    api.put({"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop",
                                                     **ENABLED}}})
    api.put(_injected(_pod("web-6d4b9-x2x9q"), config))
    api.put(_injected(_pod("payments-7b5d-qq7zn"), config))
    api.put(_injected(_pod("cart-5f7c8-k8d2m"), config, ready=False, restarts=3))
    replica = _pod("meshinject-controlplane-5d8-0",
                   labels={"app.kubernetes.io/name": "meshinject-controlplane"})
    replica["metadata"]["namespace"] = NS
    api.put(replica)
    api.proxied[(NS, "meshinject-controlplane-5d8-0:15014", "/debug/proxies")] = json.dumps(
        PROXIES)
    return config


def _sync(pod: str, *, nack: str | None = None, behind: bool = False) -> Obj:
    """One proxy as the control plane's ``/debug/proxies`` lists it (with its mutual TLS
    Secrets beside the four config types, as the real one)."""
    types = {}
    for kind in ("Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration", "Secret"):
        latest = "4" if behind and kind == "ClusterLoadAssignment" else "3"
        types[kind] = {"sent": latest, "acked": "3", "ackedAt": 1764633601.0, "latest": latest,
                       "current": latest == "3", "nack": None, "pushes": 3}
    if nack:
        types["Listener"].update(latest="5", sent="5", current=False,
                                 nack={"version": "5", "message": nack})
    return {"node": f"sidecar~{pod}", "namespace": "shop", "pod": pod,
            "serviceAccount": "default", "identity": "spiffe://cluster.local/ns/shop/sa/default",
            "certificate": {"expires": 1764720000.0, "renews": 1764676800.0},
            "mtls": "STRICT" if nack else "PERMISSIVE",
            "connectedAt": 1764633600.0, "problem": None, "types": types}


# web is synced, payments refused its last listener, the injected-but-unready cart is not
# connected at all
PROXIES = [
    _sync("web-6d4b9-x2x9q"),
    _sync("payments-7b5d-qq7zn", nack="Error adding/updating listener(s) inbound: "
          "malformed IP address: 10.0.0.256"),
]
