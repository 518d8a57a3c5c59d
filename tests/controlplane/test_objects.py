"""Kubernetes objects -> the control plane's model, as the registries deliver them."""

from __future__ import annotations

from controlplane.model.values import Endpoint, Service, ServicePort
from controlplane.registry import objects
from mesh.contract import LOAD_BALANCER, STATUS


def test_a_service_keeps_its_tcp_ports_and_its_balancing_annotation() -> None:
    svc = objects.service({
        "metadata": {"name": "web", "namespace": "shop",
                     "annotations": {LOAD_BALANCER: "least-request"}},
        "spec": {"clusterIP": "198.19.0.5", "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "dns", "port": 53, "protocol": "UDP"}]}})
    assert svc == Service("shop", "web", "198.19.0.5",
                          (ServicePort(80, "http"), ServicePort(53, "dns", "UDP")),
                          "LEAST_REQUEST")


def test_a_headless_service_has_no_address_and_an_external_name_is_no_service() -> None:
    headless = objects.service({"metadata": {"name": "db", "namespace": "shop"},
                                "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}})
    assert headless is not None and headless.cluster_ip is None
    assert objects.service({"metadata": {"name": "x", "namespace": "shop"},
                            "spec": {"type": "ExternalName", "externalName": "a.b"}}) is None


def test_slices_of_one_service_become_its_endpoints_with_their_conditions() -> None:
    def entry(address: str, **conditions: bool) -> dict[str, object]:
        return {"addresses": [address], "conditions": conditions,
                "targetRef": {"kind": "Pod", "name": f"pod-{address[-1]}"}}

    slices = [
        {"metadata": {"name": "web-a", "namespace": "shop",
                      "labels": {"kubernetes.io/service-name": "web"}},
         "ports": [{"name": "http", "port": 8080}],
         "endpoints": [entry("198.18.0.1", ready=True), entry("198.18.0.2", ready=False,
                                                               serving=True, terminating=True)]},
        {"metadata": {"name": "web-b", "namespace": "shop",
                      "labels": {"kubernetes.io/service-name": "web"}},
         "ports": [{"name": "http", "port": 8080}],
         "endpoints": [entry("198.18.0.3"), entry("198.18.0.1", ready=True)]},
    ]
    assert objects.grouped_slices(slices).keys() == {("shop", "web")}
    found = objects.endpoints(slices)
    ports = (("http", 8080),)
    assert found == (
        Endpoint("198.18.0.1", ports, True, True, False, "pod-1"),
        Endpoint("198.18.0.2", ports, False, True, True, "pod-2"),
        Endpoint("198.18.0.3", ports, True, True, False, "pod-3"),  # absent: ready
    )


def test_only_injected_pods_with_an_address_are_workloads() -> None:
    pod = {"metadata": {"name": "web-1", "namespace": "shop", "uid": "u",
                        "annotations": {STATUS: "{}", "proxy.meshinject.io/timeout": "2s",
                                        "other": "x"}},
           "spec": {"serviceAccountName": "web", "containers": [
               {"name": "app", "ports": [{"containerPort": 8080}]}]},
           "status": {"podIP": "198.18.0.9"}}
    found = objects.workload(pod)
    assert found is not None
    assert (found.service_account, found.ip, found.container_ports) == ("web", "198.18.0.9",
                                                                       (8080,))
    assert found.annotations == (("proxy.meshinject.io/timeout", "2s"),)
    assert objects.workload({**pod, "metadata": {"name": "p", "namespace": "shop"}}) is None


def test_a_whole_list_gives_the_changes_from_the_last_one() -> None:
    service = {"kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"clusterIP": "198.19.0.5", "ports": [{"port": 80}]}}
    state, changes = objects.changes([service])
    assert [(c.kind, c.key) for c in changes] == [("service", ("shop", "web"))]
    same, none = objects.changes([service], previous=state)
    assert none == [] and same == state
    _, gone = objects.changes([], previous=state)
    assert [(c.kind, c.key, c.value) for c in gone] == [("service", ("shop", "web"), None)]


def test_a_pods_http_and_grpc_probes_are_kept_with_named_ports_resolved() -> None:
    spec = {"containers": [{
        "name": "app", "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready?full=1", "port": "http"}},
        "livenessProbe": {"httpGet": {"port": 8080}},
        "startupProbe": {"grpc": {"port": 9090}}}, {
        "name": "side",
        "readinessProbe": {"tcpSocket": {"port": 7000}},
        "livenessProbe": {"httpGet": {"path": "/x", "port": 80, "host": "example.org"}}}]}
    assert objects.probes(spec) == ((8080, "/"), (8080, "/ready"),
                                    (9090, "/grpc.health.v1.Health/Check"))


def test_a_namespace_keeps_its_labels() -> None:
    found = objects.namespace({"metadata": {"name": "shop", "labels": {
        "security.meshinject.io/mtls": "strict"}}})
    assert found.name == "shop" and dict(found.labels) == {"security.meshinject.io/mtls": "strict"}
