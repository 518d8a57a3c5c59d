"""A small cluster in the fake API server: the installed base, and pods injected by the real core.

``seed(fake)`` stores what ``kubectl apply -k manifests/`` would (the webhook configuration, the
ConfigMap), runs the real cert store so the caBundle and the Secret are genuine, and adds
namespaces and pods covering every verdict inspect and check can give.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from injector.core.patch import render
from injector.webhook import certstore
from injector.webhook.certstore import CertStoreOptions
from mesh.contract import PROXY_NAME
from mesh.overrides.pod import parse_overrides
from mesh.settings import MeshConfig, config_from_yaml
from tests.support import kustomize
from tests.support.fakeserver import Running
from tests.support.kustomize import one

Obj = dict[str, Any]
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


def _pod(
    ns: str,
    name: str,
    *,
    labels: Obj | None = None,
    annotations: Obj | None = None,
    host_network: bool = False,
) -> Obj:
    pod: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": name, **(labels or {})},
            # as the API server returns it: an empty map is omitted
            **({"annotations": annotations} if annotations else {}),
        },
        "spec": {
            "containers": [{"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0}],
        },
    }
    if host_network:
        pod["spec"]["hostNetwork"] = True
    return pod


def _injected(pod: Obj, config: MeshConfig, *, ready: bool = True, restarts: int = 0) -> Obj:
    annotations = pod["metadata"].get("annotations") or {}
    out = render(
        copy.deepcopy(pod), config=config, overrides=parse_overrides(annotations, config=config)
    )
    status = {"name": PROXY_NAME, "ready": ready, "restartCount": restarts}
    key = "initContainerStatuses" if config.native_sidecars else "containerStatuses"
    out.setdefault("status", {}).setdefault(key, []).append(status)
    return out


def seed(fake: Running, tmp: Path) -> MeshConfig:
    api = fake.api
    configmap = one(kustomize.render(), "ConfigMap", "meshinject-config")
    api.put(copy.deepcopy(configmap))
    config = config_from_yaml(configmap["data"]["mesh.yaml"])
    webhook = copy.deepcopy(one(kustomize.render(), "MutatingWebhookConfiguration", "meshinject"))
    api.put(webhook)
    certstore.bootstrap(
        CertStoreOptions(
            namespace="meshinject-system",
            secret_name="meshinject-certs",
            webhook_name="meshinject",
            service_name="meshinject",
            cert_dir=tmp / "certs",
            kubeconfig=fake.kubeconfig,
        )
    )
    for name, labels in (
        ("shop", {"meshinject.io/inject": "enabled"}),
        ("legacy", {}),
        ("meshinject-system", {}),
    ):
        api.put(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": {"kubernetes.io/metadata.name": name, **labels},
                },
            }
        )
    for i in range(2):
        injector = _pod(
            "meshinject-system",
            f"meshinject-7c9-{i}",
            labels={"app.kubernetes.io/name": "meshinject"},
        )
        injector["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        api.put(injector)
    old = config.model_copy(update={"proxy": config.proxy.model_copy(update={"concurrency": 2})})
    api.put(_injected(_pod("shop", "web-6d4b9-x2x9q"), config))
    api.put(
        _injected(
            _pod(
                "shop",
                "cart-5f7c8-k8d2m",
                annotations={"traffic.meshinject.io/interception-mode": "TPROXY"},
            ),
            config,
            ready=False,
            restarts=3,
        )
    )
    api.put(_injected(_pod("shop", "payments-7b5d-qq7zn"), old))
    api.put(_pod("shop", "reports-68f9-bx4lp"))  # created before the namespace was labelled
    api.put(_pod("shop", "batch-0", labels={"meshinject.io/inject": "false"}))
    api.put(_pod("shop", "node-agent-9zz", host_network=True))
    api.put(_injected(_pod("legacy", "canary-1", labels={"meshinject.io/inject": "true"}), config))
    api.put(_pod("legacy", "plain-1"))
    api.put(_pod("legacy", "annotated-1", annotations={"meshinject.io/inject": "true"}))
    fake.api.proxied[("shop", "web-6d4b9-x2x9q:15090", "/stats/prometheus")] = STATS
    replica = _pod("meshinject-system", "meshinject-controlplane-5d8-0",
                   labels={"app.kubernetes.io/name": "meshinject-controlplane"})
    api.put(replica)
    fake.api.proxied[("meshinject-system", "meshinject-controlplane-5d8-0:15014",
                      "/debug/proxies")] = json.dumps(PROXIES)
    fake.api.proxied[("meshinject-system", "meshinject-controlplane-5d8-0:15014",
                      "/debug/config")] = json.dumps(CONFIG)
    return config


def _sync(pod: str, *, nack: str | None = None, behind: bool = False) -> Obj:
    """One proxy as the control plane's ``/debug/proxies`` lists it."""
    types = {}
    for kind in ("Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"):
        latest = "4" if behind and kind == "ClusterLoadAssignment" else "3"
        types[kind] = {"sent": latest, "acked": "3", "latest": latest,
                       "current": latest == "3", "nack": None, "pushes": 3}
    if nack:
        types["Listener"].update(latest="5", sent="5", current=False,
                                 nack={"version": "5", "message": nack})
    return {"node": f"sidecar~{pod}", "namespace": "shop", "pod": pod,
            "serviceAccount": "default", "identity": "spiffe://cluster.local/ns/shop/sa/default",
            "certificate": {"expires": 1764720000.0, "renews": 1764676800.0},
            "mtls": "STRICT" if nack else "PERMISSIVE",
            "connectedAt": 1764633600.0, "problem": None, "types": types}


# what /debug/config answers (the fake ignores the query: every pod gets this)
CONFIG = {
    "Cluster": {"outbound|80||web.shop.svc.cluster.local": {"type": "EDS", "lbPolicy":
                                                             "ROUND_ROBIN"}},
    "ClusterLoadAssignment": {"outbound|80||web.shop.svc.cluster.local": {"endpoints": []}},
    "Listener": {"outbound": {"name": "outbound"}},
    "RouteConfiguration": {"outbound|80||web.shop.svc.cluster.local": {"virtualHosts": []}},
}


# web is synced, payments refused its last listener, the injected-but-unready cart is not
# connected at all
PROXIES = [
    _sync("web-6d4b9-x2x9q"),
    _sync("payments-7b5d-qq7zn", nack="Error adding/updating listener(s) inbound: "
          "malformed IP address: 10.0.0.256"),
]
