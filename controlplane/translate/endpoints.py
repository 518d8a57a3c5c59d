"""A Service port's endpoints -> its ClusterLoadAssignment (EDS).

The same for every proxy, so the runtime computes each once per change. An endpoint that is
ready takes new requests; one that still serves while terminating is DRAINING (its requests
finish, no new ones arrive); the rest are left out, so no request is sent to them at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container, Iterable

from controlplane.model.values import Endpoint, Service, ServicePort
from mesh.envoy import service as envoy_service
from mesh.envoy.base import Json


def lb_endpoints(
    port: ServicePort, endpoints: Iterable[Endpoint], *, meshed: Container[str] = ()
) -> list[envoy_service.LbEndpoint]:
    """The endpoints behind one Service port, each on the port its slice gives for it; those
    whose address is in ``meshed`` (a pod with a proxy) are called over mutual TLS."""
    found: list[envoy_service.LbEndpoint] = []
    for endpoint in endpoints:
        target = endpoint.port_for(port.name)
        if target is None or not _is_ip(endpoint.address):
            continue
        mtls = endpoint.address in meshed
        if endpoint.ready and not endpoint.terminating:
            found.append(envoy_service.LbEndpoint(endpoint.address, target, "HEALTHY", mtls))
        elif endpoint.serving:
            found.append(envoy_service.LbEndpoint(endpoint.address, target, "DRAINING", mtls))
    return sorted(found, key=lambda e: (e.address, e.port))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def assignments(service: Service, endpoints: Iterable[Endpoint], *,
                meshed: Container[str] = ()) -> dict[str, Json]:
    """Every ClusterLoadAssignment of one Service, by cluster name."""
    listed = tuple(endpoints)
    out: dict[str, Json] = {}
    for port in service.ports:
        name = envoy_service.cluster_name(service.hostname, port.port)
        out[name] = envoy_service.load_assignment(
            name, lb_endpoints(port, listed, meshed=meshed))
    return out
