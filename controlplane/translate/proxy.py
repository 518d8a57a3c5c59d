"""Everything one proxy gets over xDS, from the model: listeners, clusters, routes, endpoints.

The bootstrap the injector renders holds only what must work before the control plane answers
(admin, readiness, Prometheus, the xDS connection); this module produces the rest. The pod's
annotations still decide its L7 policy (parsed by the same code the webhook ran at admission),
so a proxy's config depends on three things only: the Services, their endpoints, and the
pod's own overrides; :func:`view_key` says which of a pod's facts matter, so proxies with the
same ones share one computation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controlplane.model.values import Service, Workload
from controlplane.translate.outbound import outbound
from mesh.envoy import capture
from mesh.envoy import http as envoy_http
from mesh.envoy.base import Json
from mesh.overrides.pod import PodOverrides, parse_overrides
from mesh.settings import MeshConfig

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
# the order a push goes out in: clusters before the endpoints they wait for, listeners before
# the routes they name, so Envoy never holds a reference to something it was not sent
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


@dataclass(frozen=True)
class ProxyResources:
    """A proxy's resources by type URL, then by name (EDS is shared: see endpoints.py)."""

    listeners: dict[str, Json]
    clusters: dict[str, Json]
    routes: dict[str, Json]

    def by_type(self) -> dict[str, dict[str, Json]]:
        return {LISTENER: self.listeners, CLUSTER: self.clusters, ROUTE: self.routes}


def overrides_of(workload: Workload, *, config: MeshConfig) -> PodOverrides:
    """The pod's overrides, as the webhook parsed them at admission."""
    return parse_overrides(dict(workload.annotations), config=config)


def view_key(workload: Workload, *, config: MeshConfig) -> PodOverrides:
    """What of a workload its resources depend on (today: its overrides alone)."""
    return overrides_of(workload, config=config)


def translate(
    services: Iterable[Service], *, overrides: PodOverrides
) -> ProxyResources:
    """The listeners, clusters and routes of a proxy with these overrides."""
    policy = overrides.traffic
    out = outbound(services, policy=policy)
    extras = capture.l7_extras(overrides, "outbound")
    extras["chains"] = [*out.chains, *extras["chains"]]
    listeners = {
        "outbound": capture.direction_listener("outbound", overrides=overrides, **extras),
        "inbound": capture.direction_listener(
            "inbound", overrides=overrides, **capture.l7_extras(overrides, "inbound")),
    }
    clusters = {c["name"]: c for c in (*capture.passthrough_clusters(),
                                        *envoy_http.clusters(policy))}
    clusters.update(out.clusters)
    return ProxyResources(listeners=listeners, clusters=clusters, routes=out.routes)


def referenced(resources: ProxyResources) -> Mapping[str, set[str]]:
    """The EDS and RDS names a proxy's clusters and listeners refer to."""
    eds = {c["eds_cluster_config"]["service_name"] for c in resources.clusters.values()
           if c.get("type") == "EDS"}
    return {ENDPOINT: eds, ROUTE: set(resources.routes)}
