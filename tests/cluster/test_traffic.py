"""Traffic between pods that really run, the proxies configured from what the real API server
says: one keep-alive connection balanced per request over a Service's ready endpoints, scaling
the Deployment moving traffic within a second of its EndpointSlice changing, and a timeout set
in the mesh ConfigMap reaching the running proxies without a restart.

The pods run on the sandbox node (``examples/shop.yaml``, or a slow backend made here): a
frontend calls its backend's Service over one keep-alive connection and logs, per call, the pod
that answered and the connection's number (``injector/sandbox/demo_app.py``); the test reads
those lines with ``kubectl logs`` and the EndpointSlices from the API server.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import yaml

from injector.sandbox.demo_app import CallLine, parse_call
from mesh.contract import CONFIG_KEY, CONFIGMAP, INJECT, NAMESPACE_ENABLED, PROXY_NAME
from tests.support import meshapp
from tests.support.realcluster import NS, LocalCluster

pytestmark = pytest.mark.cluster
FRONT_PORT = 8080


class Frontend:
    """A frontend pod (its Deployment's one replica) and the backend target it calls."""

    def __init__(self, cluster: LocalCluster, ns: str, app: str, target: str) -> None:
        self.cluster, self.ns, self.app, self.target = cluster, ns, app, target
        self.pod = meshapp.pods(cluster, ns, app)[0]["metadata"]["name"]

    def get(self) -> int:
        """One request to it through the API server's pod proxy; its status."""
        with self.cluster.api(timeout=30) as api:
            return api.get(f"/api/v1/namespaces/{self.ns}/pods/{self.pod}:{FRONT_PORT}"
                           "/proxy/").status_code

    def logged(self) -> list[CallLine]:
        """Every call it logged to its target."""
        out = self.cluster.kubectl("logs", "-n", self.ns, self.pod, "-c", self.app).stdout
        return [call for call in map(parse_call, out.splitlines())
                if call is not None and call.target == self.target]

    def timed_calls(self, *, count: int = 0, seconds: float = 0) -> list[tuple[float, CallLine]]:
        """``count`` requests (or as many as fit in ``seconds``), each with the monotonic time
        it was sent and the call the frontend made for it."""
        before = len(self.logged())
        sent: list[float] = []
        end = time.monotonic() + seconds
        while len(sent) < count or time.monotonic() < end:
            sent.append(time.monotonic())
            self.get()
        found: list[CallLine] = []

        def all_logged() -> bool:
            found[:] = self.logged()[before:]
            return len(found) >= len(sent)

        meshapp.wait_for(f"{len(sent)} calls in {self.pod}'s log", all_logged, timeout=10,
                         every=0.2)
        return list(zip(sent, found, strict=False))

    def calls(self, count: int) -> list[CallLine]:
        return [call for _, call in self.timed_calls(count=count)]


def ready_endpoints(cluster: LocalCluster, ns: str, service: str) -> set[str]:
    """The pods the Service's EndpointSlices list as ready."""
    with cluster.api() as api:
        slices = api.get(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                         params={"labelSelector": f"kubernetes.io/service-name={service}"}
                         ).raise_for_status().json()["items"]
    return {e["targetRef"]["name"] for s in slices for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready")}


def wait_endpoints(cluster: LocalCluster, ns: str, service: str, count: int
                   ) -> tuple[float, set[str]]:
    """When (monotonic) the Service's EndpointSlices first listed ``count`` ready pods, and
    which (polled every 20 ms: the test's own view of the change the control plane watches)."""
    deadline = time.monotonic() + 120
    while len(found := ready_endpoints(cluster, ns, service)) != count:
        assert time.monotonic() < deadline, f"{service} never had {count} ready endpoints"
        time.sleep(0.02)
    return time.monotonic(), found


def healthy_members(cluster: LocalCluster, ns: str, pod: str, service: str) -> float:
    """How many healthy endpoints the pod's proxy has for the Service's port 80."""
    return meshapp.counter(meshapp.stats(cluster, ns, pod),
                           meshapp.cluster_stat(ns, "membership_healthy"),
                           envoy_cluster_name=f"outbound|80||{service}")


def moved_within(timeline: list[tuple[float, CallLine]], since: float,
                 where: set[str]) -> float:
    """Seconds from ``since`` to the first request after which every call went to ``where``
    (and at least one did)."""
    assert timeline and timeline[-1][1].pod in where, timeline
    first = len(timeline)
    while first > 0 and timeline[first - 1][1].pod in where:
        first -= 1
    return max(0.0, timeline[first][0] - since)


def test_one_connection_is_balanced_and_scaling_moves_traffic_within_a_second(
    cluster: LocalCluster,
) -> None:
    with cluster.namespace("traffic", labels={INJECT: NAMESPACE_ENABLED}) as ns:
        meshapp.deploy(cluster, ns)
        web = Frontend(cluster, ns, "web", "catalog:80/items")
        _, two = wait_endpoints(cluster, ns, "catalog", 2)
        # Ready pods do not wait for one another: web's proxy may be ready before the
        # control plane pushed it catalog's endpoints
        meshapp.wait_for("web's proxy with both catalog endpoints",
                         lambda: healthy_members(cluster, ns, web.pod, "catalog") == 2,
                         timeout=10, every=0.1)

        seen = web.calls(10)
        assert [c.status for c in seen] == [200] * 10, seen
        assert {c.connection for c in seen} == {1}, seen  # one keep-alive connection ...
        assert Counter(c.pod for c in seen) == dict.fromkeys(two, 5), seen  # ... round robin

        cluster.kubectl("scale", "deployment/catalog", "-n", ns, "--replicas=3")
        changed, three = wait_endpoints(cluster, ns, "catalog", 3)
        (new,) = three - two
        timeline = web.timed_calls(seconds=2)
        first = next((sent for sent, call in timeline if call.pod == new), None)
        assert first is not None, f"{new} got no request in 2 s: {timeline}"
        assert first - changed < 1.0, (first - changed, timeline)
        seen = web.calls(9)
        assert Counter(c.pod for c in seen) == dict.fromkeys(three, 3), seen

        cluster.kubectl("scale", "deployment/catalog", "-n", ns, "--replicas=1")
        changed, one = wait_endpoints(cluster, ns, "catalog", 1)
        timeline = web.timed_calls(seconds=2)
        took = moved_within(timeline, changed, one)
        assert took < 1.0, (took, timeline)
        assert {c.status for _, c in timeline} == {200}, timeline  # none lost on the way
        assert {c.connection for _, c in timeline} == {1}, timeline


_APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: {name}
          image: example.com/shop/{name}:1.0
          command: [python3, -m, injector.sandbox.demo_app]
          args: [{args}]
          ports: [{{name: http, containerPort: 8080}}]
          readinessProbe: {{tcpSocket: {{port: http}}, periodSeconds: 2}}
"""
# a backend that answers after 400 ms, behind its Service, and a frontend that calls it
SLOW_SHOP = "---".join([
    _APP.format(name="slow", args="backend, --name=slow, --delay-ms=400"),
    """
apiVersion: v1
kind: Service
metadata: {name: slow}
spec:
  selector: {app: slow}
  ports: [{name: http, port: 80, targetPort: http}]
""",
    _APP.format(name="front", args="frontend, --call=slow=slow:80/items"),
])


def proxy_restarts(cluster: LocalCluster, ns: str, pod: str) -> int:
    found = json.loads(cluster.kubectl("get", "pod", pod, "-n", ns, "-o", "json").stdout)
    statuses = found["status"].get("initContainerStatuses") or []
    return int(next(s["restartCount"] for s in statuses if s["name"] == PROXY_NAME))


def test_a_timeout_set_in_the_mesh_configmap_reaches_running_proxies_without_a_restart(
    cluster: LocalCluster,
) -> None:
    with cluster.namespace("timeout", labels={INJECT: NAMESPACE_ENABLED}) as ns:
        meshapp.deploy(cluster, ns, count=2, manifest=SLOW_SHOP)
        front = Frontend(cluster, ns, "front", "slow:80/items")
        seen = front.calls(2)
        assert [c.status for c in seen] == [200, 200], seen  # 400 ms: no timeout by default

        out = cluster.kubectl("get", "configmap", CONFIGMAP, "-n", NS, "-o", "json").stdout
        original = json.loads(out)["data"][CONFIG_KEY]
        changed = yaml.safe_load(original) or {}
        changed.setdefault("traffic", {})["timeout"] = "150ms"
        patched = time.monotonic()
        try:
            cluster.kubectl("patch", "configmap", CONFIGMAP, "-n", NS, "--type=merge", "-p",
                            json.dumps({"data": {CONFIG_KEY: yaml.safe_dump(changed)}}))
            meshapp.wait_for("the 150 ms timeout applied",
                             lambda: front.get() == 502, timeout=10,
                             every=0.1)
            took = time.monotonic() - patched
            seen = front.calls(3)
            assert [c.status for c in seen] == [504] * 3, seen  # Envoy's upstream timeout
        finally:
            cluster.kubectl("patch", "configmap", CONFIGMAP, "-n", NS, "--type=merge", "-p",
                            json.dumps({"data": {CONFIG_KEY: original}}))
        assert took < 10
        # the same proxies, configured live: none restarted, and front's Envoy has been up
        # since before the change
        assert [proxy_restarts(cluster, ns, p["metadata"]["name"])
                for p in meshapp.pods(cluster, ns)] == [0, 0]
        uptime = meshapp.counter(meshapp.stats(cluster, ns, front.pod), "envoy_server_uptime")
        assert uptime > time.monotonic() - patched, uptime
        meshapp.wait_for("the timeout gone with the ConfigMap put back",
                         lambda: front.get() == 200, timeout=10, every=0.1)
