"""The Services a proxy can call -> its outbound clusters, routes and filter chains.

Every Service port with a virtual address gets an EDS cluster (balanced across its endpoints), a
route configuration (the client's timeout and retries) and two filter chains on the outbound
capture listener matching that address and port (HTTP through the route, anything else over
TCP). Headless Services have no virtual address to match: their pods are dialled directly and
pass through as before, as does every destination outside the mesh.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from controlplane.model.values import Service, ServicePort
from mesh.envoy import service as envoy_service
from mesh.envoy.base import Json
from mesh.overrides.traffic import TrafficPolicy

# appProtocol values that say "not HTTP": such ports get only the TCP chain
_NOT_HTTP = frozenset({"tcp", "mysql", "redis", "mongo", "postgresql", "kafka", "tls"})


@dataclass(frozen=True)
class Outbound:
    """One proxy's outbound resources, by name."""

    clusters: dict[str, Json]
    routes: dict[str, Json]
    chains: list[Json]


def _http_allowed(port: ServicePort) -> bool:
    name = port.name.split("-", 1)[0].lower()
    return port.app_protocol.lower() not in _NOT_HTTP and name not in _NOT_HTTP


def outbound(services: Iterable[Service], *, policy: TrafficPolicy) -> Outbound:
    clusters: dict[str, Json] = {}
    routes: dict[str, Json] = {}
    chains: list[Json] = []
    for service in sorted(services, key=lambda s: s.key):
        for port in service.ports:
            if port.protocol != "TCP":
                continue  # UDP and SCTP are never captured
            cluster = envoy_service.cluster_name(service.hostname, port.port)
            clusters[cluster] = envoy_service.eds_cluster(
                cluster, policy=policy, lb_policy=service.lb_policy)
            if service.cluster_ip is None:
                continue
            route = envoy_service.route_name(service.hostname, port.port)
            routes[route] = envoy_service.route(
                route, cluster=cluster, domains=["*"], policy=policy)
            chains += envoy_service.filter_chains(
                name=f"{service.name}.{service.namespace}:{port.port}",
                address=service.cluster_ip, port=port.port, cluster=cluster,
                route_name=route, policy=policy, http_allowed=_http_allowed(port),
                prefix_len=ipaddress.ip_address(service.cluster_ip).max_prefixlen)
    return Outbound(clusters, routes, chains)

