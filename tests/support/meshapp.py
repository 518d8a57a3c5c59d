"""Pods that really run: ``examples/shop.yaml`` on the sandbox node of the real local cluster.

:func:`deploy` applies it in a namespace and waits until every pod is Ready (the node ran
mesh-init, the proxy got its config from the control plane in the cluster, the app answers its
probe). What the tests then read goes where a user's reads go: through the API server (its pod
proxy to a pod's port, ``kubectl logs``), which reaches the pods through the node's CONNECT
proxy into the node's network namespace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from injector.cluster.inspect import parse_prometheus
from mesh.contract import PROMETHEUS_PATH, PROMETHEUS_PORT
from tests.support.paths import EXAMPLES
from tests.support.realcluster import LocalCluster

SHOP = EXAMPLES / "shop.yaml"
Obj = dict[str, Any]


def wait_for(what: str, check: Callable[[], bool], *, timeout: float = 120,
             every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(every)


def pods(cluster: LocalCluster, ns: str, app: str | None = None) -> list[Obj]:
    selector = ["-l", f"app={app}"] if app else []
    out = cluster.kubectl("get", "pods", "-n", ns, *selector, "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def deploy(cluster: LocalCluster, ns: str, *, count: int = 3, timeout: float = 180,
           manifest: str | None = None) -> None:
    """``kubectl apply -n NS -f examples/shop.yaml`` (or the ``manifest`` text given), then
    wait for ``count`` Ready pods."""
    if manifest is None:
        cluster.kubectl("apply", "-n", ns, "-f", str(SHOP))
    else:
        cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=manifest)

    def all_ready() -> bool:
        found = pods(cluster, ns)
        return len(found) == count and all(ready(p) for p in found)

    try:
        wait_for(f"{count} Ready pods in {ns}", all_ready, timeout=timeout)
    except AssertionError:
        table = cluster.kubectl("get", "pods", "-n", ns, "-o", "wide").stdout
        raise AssertionError(f"the shop is not Ready in {timeout:g} s:\n{table}") from None


def proxy_get(cluster: LocalCluster, ns: str, pod: str, port: int, path: str) -> str:
    """GET through the API server's pod proxy (as ``kubectl get --raw`` does)."""
    with cluster.api(timeout=30) as api:
        answer = api.get(f"/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/{path.lstrip('/')}")
    assert answer.status_code == 200, f"{pod}:{port}/{path}: {answer.status_code} {answer.text}"
    return answer.text


def stats(cluster: LocalCluster, ns: str, pod: str) -> list[tuple[str, dict[str, str], float]]:
    """A proxy's Prometheus samples, as Envoy names them (no parser's renaming)."""
    return parse_prometheus(proxy_get(cluster, ns, pod, PROMETHEUS_PORT, PROMETHEUS_PATH))


def counter(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sample of exactly that name and labels (0 when Envoy has not made it yet)."""
    return sum(v for n, found, v in samples if n == name and found == labels)


def cluster_stat(namespace: str, stat: str) -> str:
    """The metric name of a Service's cluster stat: Envoy's tag extraction moves the Service's
    ``NS.svc.cluster.local`` into the name (the label keeps ``outbound|PORT||NAME``)."""
    return f"envoy_cluster_{namespace.replace('-', '_')}_svc_cluster_local_{stat}"
