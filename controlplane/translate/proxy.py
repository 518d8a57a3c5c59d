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

from controlplane.model.values import Key, Namespace, Service, Workload
from controlplane.translate.inbound import PERMISSIVE, InboundSecurity, inbound_listener
from controlplane.translate.outbound import outbound
from mesh.contract import MTLS_MODE
from mesh.envoy import capture
from mesh.envoy import http as envoy_http
from mesh.envoy.base import Json
from mesh.overrides.pod import PodOverrides, parse_overrides
from mesh.overrides.values import MtlsMode
from mesh.settings import MeshConfig

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# the order a push goes out in: clusters before the endpoints they wait for, listeners before
# the routes they name, so Envoy never holds a reference to something it was not sent; the
# secrets the clusters and listeners name right after them (Envoy warms both until they come)
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)


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


@dataclass(frozen=True)
class ViewKey:
    """What of a workload its listeners, clusters and routes depend on: proxies with equal
    keys (the pods of one Deployment, usually) share one translation."""

    overrides: PodOverrides
    security: InboundSecurity = PERMISSIVE


def mtls_mode(overrides: PodOverrides, namespace: Namespace | None) -> MtlsMode:
    """The pod's own annotation, else its namespace's label, else PERMISSIVE."""
    if overrides.mtls is not None:
        return overrides.mtls
    label = dict(namespace.labels).get(MTLS_MODE, "") if namespace else ""
    return "STRICT" if label.strip().upper() == "STRICT" else "PERMISSIVE"


def view_key(workload: Workload, *, config: MeshConfig,
             namespaces: Mapping[Key, Namespace] | None = None) -> ViewKey:
    overrides = overrides_of(workload, config=config)
    namespace = (namespaces or {}).get(("", workload.namespace))
    return ViewKey(overrides, InboundSecurity(mtls_mode(overrides, namespace), workload.probes))


def translate(
    services: Iterable[Service], *, overrides: PodOverrides,
    security: InboundSecurity = PERMISSIVE,
    identities: Mapping[Key, tuple[str, ...]] | None = None,
    direct: Mapping[Key, tuple[tuple[str, str, int], ...]] | None = None,
) -> ProxyResources:
    """The listeners, clusters and routes of a proxy with these overrides."""
    policy = overrides.traffic
    out = outbound(services, policy=policy, identities=identities, direct=direct)
    extras = capture.l7_extras(overrides, "outbound")
    extras["chains"] = [*out.chains, *extras["chains"]]
    listeners = {
        "outbound": capture.direction_listener("outbound", overrides=overrides, **extras),
        "inbound": inbound_listener(overrides, security),
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
