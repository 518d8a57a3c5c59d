"""The Services a proxy can call -> its outbound clusters, routes and filter chains.

Every Service port with a virtual address gets an EDS cluster (balanced across its endpoints,
mutual TLS to those in the mesh, see :mod:`mesh.envoy.tls`), a
route configuration (the client's timeout and retries) and two filter chains on the outbound
capture listener matching that address and port (HTTP through the route, anything else over
TCP). Headless Services have no virtual address to match: their pods are dialled directly (a
StatefulSet's ``pod-0.db``). Those of their pods that have a proxy get chains of their own,
address and port, to an original-destination cluster with the Service's mutual TLS, so a
direct call into the mesh is encrypted and its identity checked too. Every other destination
passes through as before.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controlplane.model.values import Key, Service, ServicePort
from mesh.envoy import service as envoy_service
from mesh.envoy import tls
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


def outbound(services: Iterable[Service], *, policy: TrafficPolicy,
             identities: Mapping[Key, tuple[str, ...]] | None = None,
             direct: Mapping[Key, tuple[tuple[str, str, int], ...]] | None = None) -> Outbound:
    """``identities``: the SPIFFE IDs of each Service's endpoints in the mesh, which its
    cluster's mutual TLS expects the server to present. ``direct``: for headless Services, the
    (port name, address, port) of each endpoint in the mesh."""
    expected = identities or {}
    clusters: dict[str, Json] = {}
    routes: dict[str, Json] = {}
    chains: list[Json] = []
    for service in sorted(services, key=lambda s: s.key):
        for port in service.ports:
            if port.protocol != "TCP":
                continue  # UDP and SCTP are never captured
            cluster = envoy_service.cluster_name(service.hostname, port.port)
            clusters[cluster] = envoy_service.eds_cluster(
                cluster, policy=policy, lb_policy=service.lb_policy,
                sni=tls.sni(service.hostname, port.port),
                identities=expected.get(service.key, ()))
            if service.cluster_ip is None:
                pods = [(a, p) for name, a, p in (direct or {}).get(service.key, ())
                        if name == port.name]
                if pods:
                    _direct(service, port, pods, expected.get(service.key, ()), policy,
                            clusters, routes, chains)
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



def _direct(service: Service, port: ServicePort, pods: list[tuple[str, int]],
            identities: tuple[str, ...], policy: TrafficPolicy, clusters: dict[str, Json],
            routes: dict[str, Json], chains: list[Json]) -> None:
    """A headless Service port's pods in the mesh, each called where the app dialled it, over
    the Service's mutual TLS."""
    cluster = envoy_service.direct_cluster_name(service.hostname, port.port)
    clusters[cluster] = envoy_service.direct_cluster(
        cluster, policy=policy, sni=tls.sni(service.hostname, port.port), identities=identities)
    route = envoy_service.route_name(service.hostname, port.port)
    routes[route] = envoy_service.route(route, cluster=cluster, domains=["*"], policy=policy)
    for address, target in sorted(pods):
        chains += envoy_service.filter_chains(
            name=f"{service.name}.{service.namespace}:{address}:{target}", address=address,
            port=target, cluster=cluster, route_name=route, policy=policy,
            http_allowed=_http_allowed(port),
            prefix_len=ipaddress.ip_address(address).max_prefixlen)
