"""A mesh Service as Envoy sees it: an EDS cluster, its endpoints, a route, and the outbound
filter chains that send a Service's virtual address to them.

The app still dials the Service's ClusterIP (or its name, which resolves to it); the outbound
capture listener matches that address and port, and the connection goes to the Service's cluster
instead of the original destination. There Envoy balances every request across the ready
endpoints, pools connections per endpoint, retries on another endpoint and ejects failing ones:
what the original-destination passthrough could not do. Pure: names and policy in, dicts out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mesh.contract import NOT_DELIVERED_HEADER
from mesh.envoy import http, tls
from mesh.envoy.base import (
    ADS_SOURCE,
    HTTP_PROTOCOL_OPTIONS,
    TCP_PROXY,
    Json,
    seconds,
    socket_address,
)
from mesh.overrides.traffic import TrafficPolicy

Health = Literal["HEALTHY", "DRAINING"]


@dataclass(frozen=True)
class LbEndpoint:
    """One endpoint of a cluster: DRAINING ones (terminating, still serving) get no new
    requests but finish what they have."""

    address: str
    port: int
    health: Health = "HEALTHY"
    meshed: bool = False  # its pod has a proxy: called over mutual TLS


def eds_cluster(
    name: str, *, policy: TrafficPolicy, lb_policy: str = "ROUND_ROBIN",
    sni: str = "", identities: Sequence[str] = (),
) -> Json:
    """A Service port's cluster: endpoints over EDS, the client's breakers and ejection; with
    ``sni``, mutual TLS to the endpoints that are in the mesh, expecting ``identities``."""
    cluster: Json = {
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": ADS_SOURCE, "service_name": name},
        "lb_policy": lb_policy,
        "connect_timeout": "5s",
        "circuit_breakers": http.circuit_breakers(policy),
        # the app's protocol is kept: h2c stays HTTP/2, HTTP/1.1 stays HTTP/1.1
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS,
                "use_downstream_protocol_config": {
                    "http_protocol_options": {}, "http2_protocol_options": {},
                },
            },
        },
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
    }
    if policy.outlier_consecutive_5xx:
        # never eject them all: with every endpoint failing, trying one is better than none
        cluster["outlier_detection"] = http.outlier_detection(policy, max_percent=50)
    if sni:
        cluster["transport_socket_matches"] = tls.mesh_socket_matches(
            sni_name=sni, identities=identities)
    return cluster


def direct_cluster(name: str, *, policy: TrafficPolicy, sni: str,
                   identities: Sequence[str]) -> Json:
    """Calls to pods of a headless Service that have a proxy: wherever the app dialled, over
    mutual TLS expecting the Service's identities; the client's breakers and ejection."""
    cluster: Json = {
        "name": name,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "5s",
        "circuit_breakers": http.circuit_breakers(policy),
        "typed_extension_protocol_options": eds_cluster(name, policy=policy)[
            "typed_extension_protocol_options"],
        "transport_socket": tls.upstream_socket(sni_name=sni, identities=identities),
    }
    if policy.outlier_consecutive_5xx:
        cluster["outlier_detection"] = http.outlier_detection(policy, max_percent=100)
    return cluster


def load_assignment(name: str, endpoints: Sequence[LbEndpoint]) -> Json:
    """The cluster's endpoints, in one locality (the mesh does not route by zone yet)."""
    return {
        "cluster_name": name,
        "endpoints": [{
            "lb_endpoints": [_lb_endpoint(e) for e in endpoints],
        }] if endpoints else [],
    }


def _lb_endpoint(endpoint: LbEndpoint) -> Json:
    found: Json = {"endpoint": {"address": socket_address(endpoint.address, endpoint.port)},
                   "health_status": endpoint.health}
    if endpoint.meshed:
        found["metadata"] = tls.mesh_endpoint_metadata()
    return found


def route(name: str, *, cluster: str, domains: Sequence[str], policy: TrafficPolicy) -> Json:
    """The route configuration of one Service port: every request to ``cluster``, with the
    client's timeout and retries, each retry on an endpoint not yet tried."""
    action: Json = {"cluster": cluster, "timeout": seconds(policy.timeout_ms)}
    if policy.retries and policy.retry_on:
        action["retry_policy"] = http.retry_policy(policy, other_hosts=True)
    return {
        "name": name,
        # the server proxy's not-delivered marker is for us: the app never sees it
        "response_headers_to_remove": [NOT_DELIVERED_HEADER],
        "virtual_hosts": [{
            "name": name,
            "domains": list(domains),
            "routes": [{"match": {"prefix": "/"}, "route": action}],
        }],
    }


def filter_chains(
    *, name: str, address: str, port: int, cluster: str, route_name: str,
    policy: TrafficPolicy, http_allowed: bool = True, prefix_len: int = 32,
) -> list[Json]:
    """The outbound chains for one Service port's virtual address: HTTP (when the inspector
    saw HTTP, and the port is not opaque) through the route, anything else straight to the
    cluster over TCP."""
    match: Json = {"destination_port": port,
                   "prefix_ranges": [{"address_prefix": address, "prefix_len": prefix_len}]}
    tcp: Json = {
        "name": f"{name}-tcp",
        "filter_chain_match": match,
        "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": TCP_PROXY, "stat_prefix": cluster, "cluster": cluster}}],
    }
    if not http_allowed:
        return [tcp]
    hcm = http.http_connection_manager(policy, direction="outbound", rds=route_name,
                                       stat_prefix="outbound_http")
    return [{
        "name": f"{name}-http",
        "filter_chain_match": {**match, "application_protocols": list(http.HTTP_PROTOCOLS)},
        "filters": [hcm],
    }, tcp]


def cluster_name(hostname: str, port: int) -> str:
    """``outbound|80||web.shop.svc.cluster.local``, the name Istio users know from their stats."""
    return f"outbound|{port}||{hostname}"


def direct_cluster_name(hostname: str, port: int) -> str:
    """``outbound|5432|direct|db.shop.svc.cluster.local``: a headless Service's pods, dialled
    one by one."""
    return f"outbound|{port}|direct|{hostname}"


def route_name(hostname: str, port: int) -> str:
    return f"{hostname}:{port}"
