"""Translation: a small mesh and one proxy's overrides -> exactly these resources.

The golden (``tests/golden/controlplane/``) is the whole of what a proxy gets for two Services;
the tests beside it name the properties a reader should not have to find in it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from controlplane.model.values import Endpoint, Service, ServicePort
from controlplane.translate import endpoints
from controlplane.translate.inbound import PERMISSIVE, InboundSecurity
from controlplane.translate.proxy import CLUSTER, LISTENER, ROUTE, translate
from mesh import contract
from mesh.envoy import capture
from mesh.overrides.pod import parse_overrides
from mesh.settings import MeshConfig

CONFIG = MeshConfig()
WEB = Service("shop", "web", "198.19.0.10", (ServicePort(80, "http"),))
DB = Service("shop", "db", "198.19.0.11", (ServicePort(5432, "postgres", app_protocol="tcp"),),
             "LEAST_REQUEST")
HEADLESS = Service("shop", "cache", None, (ServicePort(6379, "redis"),))
WEB_CLUSTER = "outbound|80||web.shop.svc.cluster.local"


WEB_ID = "spiffe://cluster.local/ns/shop/sa/web"


def resources(annotations: dict[str, str] | None = None,
              services: tuple[Service, ...] = (WEB, DB, HEADLESS),
              security: InboundSecurity = PERMISSIVE) -> dict[str, dict[str, object]]:
    overrides = parse_overrides(annotations or {}, config=CONFIG)
    return translate(services, overrides=overrides, security=security,
                     identities={WEB.key: (WEB_ID,)}).by_type()


def test_the_resources_of_a_small_mesh_match_their_golden(
    golden: Callable[[str, str], None]
) -> None:
    found = resources({contract.TIMEOUT: "2s", contract.RETRIES: "3"})
    eds = {**endpoints.assignments(WEB, [
        Endpoint("198.18.0.21", (("http", 8080),)),
        Endpoint("198.18.0.22", (("http", 8080),), ready=False, serving=True, terminating=True),
        Endpoint("198.18.0.23", (("http", 8080),), ready=False, serving=False),
        Endpoint("198.18.0.24", (("http", 8080),))], meshed={"198.18.0.21", "198.18.0.22"})}
    text = json.dumps({"resources": {k.rsplit(".", 1)[-1]: v for k, v in found.items()},
                       "endpoints": eds}, indent=1, sort_keys=True) + "\n"
    golden("controlplane/small-mesh.json", text)


def test_each_capture_listener_guards_its_own_port_and_passes_the_rest_through() -> None:
    listeners = resources()[LISTENER]
    for name, port in (("outbound", contract.OUTBOUND_PORT), ("inbound", contract.INBOUND_PORT)):
        listener = listeners[name]
        guard = listener["filter_chains"][0]  # type: ignore[index]
        assert guard["filter_chain_match"] == {"destination_port": port}
        assert guard["filters"][0]["typed_config"]["cluster"] == capture.BLACKHOLE
        assert listener["default_filter_chain"]["name"] == f"{name}-passthrough"  # type: ignore[index]
    clusters = resources()[CLUSTER]
    assert clusters[capture.INBOUND_PASSTHROUGH]["upstream_bind_config"][  # type: ignore[index]
        "source_address"]["address"] == "127.0.0.6"
    assert "admin" not in clusters  # the bootstrap's own: a second one would be refused


def test_a_service_address_goes_to_its_cluster_over_http_or_tcp() -> None:
    chains = resources()[LISTENER]["outbound"]["filter_chains"]  # type: ignore[index]
    web = [c for c in chains if c["name"].startswith("web.shop:80")]
    assert [c["name"] for c in web] == ["web.shop:80-http", "web.shop:80-tcp"]
    assert web[0]["filter_chain_match"]["prefix_ranges"] == [
        {"address_prefix": "198.19.0.10", "prefix_len": 32}]
    hcm = web[0]["filters"][0]["typed_config"]
    assert hcm["rds"]["route_config_name"] == "web.shop.svc.cluster.local:80"
    assert web[1]["filters"][0]["typed_config"]["cluster"] == WEB_CLUSTER
    db = [c["name"] for c in chains if c["name"].startswith("db.shop")]
    assert db == ["db.shop:5432-tcp"]  # appProtocol tcp: never HTTP
    assert not [c for c in chains if c["name"].startswith("cache.")]  # headless: pass through


def test_clusters_balance_as_the_service_says_and_routes_retry_elsewhere() -> None:
    found = resources({contract.RETRIES: "2"})
    assert found[CLUSTER][WEB_CLUSTER]["lb_policy"] == "ROUND_ROBIN"  # type: ignore[index]
    assert found[CLUSTER]["outbound|5432||db.shop.svc.cluster.local"][  # type: ignore[index]
        "lb_policy"] == "LEAST_REQUEST"
    route = found[ROUTE]["web.shop.svc.cluster.local:80"]["virtual_hosts"][0][  # type: ignore[index]
        "routes"][0]["route"]
    assert route["cluster"] == WEB_CLUSTER
    assert route["retry_policy"]["retry_host_predicate"][0]["name"] == (
        "envoy.retry_host_predicates.previous_hosts")


def test_ready_endpoints_take_requests_terminating_ones_drain_and_the_rest_are_left_out() -> None:
    cla = endpoints.assignments(WEB, [
        Endpoint("198.18.0.2", (("http", 8080),)),
        Endpoint("198.18.0.1", (("http", 8080),), ready=False, serving=True, terminating=True),
        Endpoint("198.18.0.3", (("http", 8080),), ready=False, serving=False),
        Endpoint("198.18.0.4", (("other", 9),)),  # no port of that name: not this Service's
        Endpoint("not-an-ip", (("http", 8080),)),
    ])[WEB_CLUSTER]
    hosts = [(e["endpoint"]["address"]["socket_address"]["address"], e["health_status"])
             for e in cla["endpoints"][0]["lb_endpoints"]]
    assert hosts == [("198.18.0.1", "DRAINING"), ("198.18.0.2", "HEALTHY")]


def test_tproxy_mode_makes_the_capture_listeners_transparent() -> None:
    tproxy = resources({contract.INTERCEPTION_MODE: "TPROXY"})[LISTENER]
    assert tproxy["outbound"]["transparent"] is True  # type: ignore[index]
    assert tproxy["inbound"]["transparent"] is True  # type: ignore[index]
    assert "transparent" not in resources()[LISTENER]["inbound"]


def test_the_same_overrides_give_the_same_resources() -> None:
    assert resources() == resources()
    assert resources({contract.TIMEOUT: "1s"}) != resources()


def _chains(security: InboundSecurity) -> dict[str, object]:
    listener = resources(security=security)[LISTENER]["inbound"]
    return {c["name"]: c for c in listener["filter_chains"]}  # type: ignore[index]


def test_mutual_tls_is_taken_first_and_plaintext_still_passes_when_permissive() -> None:
    listener = resources()[LISTENER]["inbound"]
    names = [c["name"] for c in listener["filter_chains"]]  # type: ignore[index]
    assert names == ["inbound-loop-guard", "inbound-mtls-http", "inbound-mtls-tcp",
                     "inbound_http"]
    assert listener["default_filter_chain"]["name"] == "inbound-passthrough"  # type: ignore[index]
    mtls = _chains(PERMISSIVE)["inbound-mtls-http"]
    assert mtls["filter_chain_match"]["server_names"] == [  # type: ignore[index]
        "*" + contract.MTLS_SNI_SUFFIX]
    tls = mtls["transport_socket"]["typed_config"]  # type: ignore[index]
    assert tls["require_client_certificate"] is True
    hcm = mtls["filters"][0]["typed_config"]  # type: ignore[index]
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"  # the app learns who called
    plain = _chains(PERMISSIVE)["inbound_http"]["filters"][0]["typed_config"]  # type: ignore[index]
    assert "forward_client_cert_details" not in plain  # default SANITIZE: no forged header


def test_strict_lets_in_only_mutual_tls_and_the_kubelets_probes() -> None:
    strict = InboundSecurity("STRICT", probes=((8080, "/healthz"),))
    listener = resources(security=strict)[LISTENER]["inbound"]
    assert "default_filter_chain" not in listener  # any other plaintext: closed
    probe_chain = _chains(strict)["inbound_http"]
    rbac = probe_chain["filters"][0]["typed_config"]["http_filters"][0]  # type: ignore[index]
    assert rbac["typed_config"]["rules"]["policies"]["kubelet-probes"]["permissions"] == [
        {"and_rules": {"rules": [{"destination_port": 8080},
                                 {"url_path": {"path": {"exact": "/healthz"}}}]}}]
    bare = InboundSecurity("STRICT")
    assert list(_chains(bare)) == ["inbound-loop-guard", "inbound-mtls-http", "inbound-mtls-tcp"]


def test_a_services_cluster_uses_mutual_tls_to_meshed_endpoints_expecting_their_identity() -> None:
    cluster = resources()[CLUSTER][WEB_CLUSTER]
    match = cluster["transport_socket_matches"][0]  # type: ignore[index]
    assert match["match"] == {"tlsMode": "mesh"}
    tls = match["transport_socket"]["typed_config"]
    assert tls["sni"] == "80.web.shop.svc.cluster.local" + contract.MTLS_SNI_SUFFIX
    assert tls["common_tls_context"]["combined_validation_context"][
        "default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": WEB_ID}}]
    assert "transport_socket" not in cluster  # the rest of its endpoints: plain TCP


def test_every_resource_of_every_mode_fits_its_protobuf_type() -> None:
    """What Envoy would refuse is caught here, not by a proxy: the control plane converts each
    resource with the same code before pushing it."""
    from controlplane.cache.snapshot import Resource
    from controlplane.grpc.convert import Converter

    converter = Converter()
    for security in (PERMISSIVE, InboundSecurity("STRICT"),
                     InboundSecurity("STRICT", probes=((8080, "/healthz"), (9090, "/ready")))):
        for type_url, found in resources(security=security).items():
            for name, body in found.items():
                converter.framed(type_url, Resource.of(name, body))  # raises if it does not fit


def test_a_headless_services_pods_in_the_mesh_are_called_directly_over_mutual_tls() -> None:
    overrides = parse_overrides({}, config=CONFIG)
    found = translate((WEB, HEADLESS), overrides=overrides,
                      identities={HEADLESS.key: ("spiffe://cluster.local/ns/shop/sa/cache",)},
                      direct={HEADLESS.key: (("redis", "198.18.0.31", 6379),)}).by_type()
    chains = [c for c in found[LISTENER]["outbound"]["filter_chains"]  # type: ignore[index]
              if c["name"].startswith("cache.")]
    assert [c["name"] for c in chains] == ["cache.shop:198.18.0.31:6379-tcp"]  # redis: TCP
    assert chains[0]["filter_chain_match"] == {
        "destination_port": 6379,
        "prefix_ranges": [{"address_prefix": "198.18.0.31", "prefix_len": 32}]}
    cluster = found[CLUSTER]["outbound|6379|direct|cache.shop.svc.cluster.local"]
    assert cluster["type"] == "ORIGINAL_DST"  # type: ignore[index]
    tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]  # type: ignore[index]
    assert tls["combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"][0]["matcher"]["exact"].endswith("/sa/cache")
