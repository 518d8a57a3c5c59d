"""The runtime: changes debounced, folded, and only what they touched recomputed."""

from __future__ import annotations

import asyncio

from controlplane.model.state import Change
from controlplane.model.values import Endpoint, Namespace, Service, ServicePort, Workload
from controlplane.runtime import Runtime, Subscriber
from controlplane.translate.proxy import CLUSTER, ENDPOINT, LISTENER
from mesh import contract
from mesh.settings import MeshConfig

WEB = Service("shop", "web", "198.19.0.10", (ServicePort(80, "http"),))
CLUSTER_NAME = "outbound|80||web.shop.svc.cluster.local"


def eps(*addresses: str) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(a, (("http", 8080),)) for a in addresses)


def pod(name: str, **annotations: str) -> Workload:
    return Workload("shop", name, ip="198.18.0.9", annotations=tuple(sorted(annotations.items())))


def runtime(*changes: Change) -> Runtime:
    rt = Runtime()
    rt.submit_all(changes)
    rt.flush()
    return rt


def attach(rt: Runtime, name: str) -> tuple[Subscriber, list[int]]:
    woken: list[int] = []
    sub = Subscriber(workload=("shop", name), wake=lambda: woken.append(1))
    rt.attach(sub)
    return sub, woken


def test_an_endpoint_change_touches_only_that_services_assignment() -> None:
    rt = runtime(Change("service", WEB.key, WEB), Change("endpoints", WEB.key, eps("198.18.0.1")),
                 Change("workload", ("shop", "a"), pod("a")))
    sub, woken = attach(rt, "a")
    before = rt.sets_for(sub)
    assert before is not None
    rt.submit(Change("endpoints", WEB.key, eps("198.18.0.1", "198.18.0.2")))
    rt.flush()
    after = rt.sets_for(sub)
    assert after is not None and woken
    assert after[CLUSTER] is before[CLUSTER] and after[LISTENER] is before[LISTENER]
    assert after[ENDPOINT].changed_since(before[ENDPOINT]) == {CLUSTER_NAME}


def test_a_resync_that_changes_nothing_wakes_nobody() -> None:
    rt = runtime(Change("service", WEB.key, WEB), Change("workload", ("shop", "a"), pod("a")))
    _, woken = attach(rt, "a")
    rt.submit(Change("service", WEB.key, WEB))
    assert not rt.flush() and not woken


def test_proxies_with_the_same_overrides_share_one_view_and_others_get_their_own() -> None:
    rt = runtime(Change("service", WEB.key, WEB), Change("workload", ("shop", "a"), pod("a")),
                 Change("workload", ("shop", "b"), pod("b")),
                 Change("workload", ("shop", "c"), pod("c", **{contract.TIMEOUT: "1s"})))
    a, _ = attach(rt, "a")
    b, _ = attach(rt, "b")
    c, _ = attach(rt, "c")
    assert a.view is b.view and a.view is not c.view
    assert len(rt.views) == 2
    rt.detach(c)
    assert len(rt.views) == 1  # nobody uses the other any more


def test_a_mesh_config_change_reaches_every_view() -> None:
    rt = runtime(Change("service", WEB.key, WEB), Change("workload", ("shop", "a"), pod("a")))
    sub, woken = attach(rt, "a")
    before = rt.sets_for(sub)
    assert before is not None
    config = MeshConfig.model_validate({"traffic": {"timeout": "3s"}})
    rt.submit(Change("config", value=config))
    rt.flush()
    after = rt.sets_for(sub)
    assert after is not None and woken
    assert after["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"].changed_since(
        before["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"])


def test_a_pod_the_registry_does_not_know_gets_no_config_and_a_reason() -> None:
    rt = runtime(Change("service", WEB.key, WEB))
    sub, _ = attach(rt, "ghost")
    assert rt.sets_for(sub) is None and "not known" in sub.problem
    rt.submit(Change("workload", ("shop", "ghost"), pod("ghost")))
    rt.flush()
    assert rt.sets_for(sub) is not None and sub.problem == ""


def test_changes_are_debounced_into_one_rebuild() -> None:
    async def scenario() -> int:
        rt = Runtime(debounce=0.05, max_delay=1.0)
        task = asyncio.create_task(rt.run())
        for i in range(20):
            rt.submit(Change("endpoints", WEB.key, eps(f"198.18.0.{i + 1}")))
            await asyncio.sleep(0.005)
        rt.submit(Change("service", WEB.key, WEB))
        await asyncio.sleep(0.2)
        task.cancel()
        return rt.stats.rebuilds

    assert asyncio.run(scenario()) == 1


def test_an_endpoint_that_gains_a_proxy_is_called_over_mutual_tls_expecting_its_identity() -> None:
    rt = runtime(Change("service", WEB.key, WEB), Change("endpoints", WEB.key, eps("198.18.0.7")),
                 Change("workload", ("shop", "a"), pod("a")))
    sub, _ = attach(rt, "a")
    before = rt.sets_for(sub)
    assert before is not None
    assignment = before[ENDPOINT].items[CLUSTER_NAME].body
    assert "metadata" not in assignment["endpoints"][0]["lb_endpoints"][0]  # plain TCP to it
    server = Workload("shop", "web-1", ip="198.18.0.7", service_account="web")
    rt.submit(Change("workload", server.key, server))
    rt.flush()
    after = rt.sets_for(sub)
    assert after is not None
    endpoint = after[ENDPOINT].items[CLUSTER_NAME].body["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["metadata"]["filter_metadata"]["envoy.transport_socket_match"] == {
        "tlsMode": "mesh"}
    tls = after[CLUSTER].items[CLUSTER_NAME].body["transport_socket_matches"][0][
        "transport_socket"]["typed_config"]["common_tls_context"]["combined_validation_context"]
    assert tls["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/shop/sa/web"}}]


def test_a_namespace_label_makes_its_pods_strict_and_a_pod_annotation_overrides_it() -> None:
    rt = runtime(Change("service", WEB.key, WEB), Change("workload", ("shop", "a"), pod("a")),
                 Change("workload", ("shop", "b"), pod("b", **{contract.MTLS_MODE: "permissive"})))
    a, woken = attach(rt, "a")
    b, _ = attach(rt, "b")
    assert a.view is not None and a.view.key.security.mode == "PERMISSIVE"
    rt.submit(Change("namespace", ("", "shop"),
                     Namespace("shop", ((contract.MTLS_MODE, "strict"),))))
    rt.flush()
    assert woken and a.view is not None and a.view.key.security.mode == "STRICT"
    assert b.view is not None and b.view.key.security.mode == "PERMISSIVE"
