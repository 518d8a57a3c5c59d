"""Services, endpoints and workloads, reduced to what the proxies' configuration depends on.

Each value is frozen and hashable, so a translation can be cached on the values it read, and a
registry can tell a real change from a resync that delivered the same object again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mesh.pki import spiffe

LbPolicy = Literal["ROUND_ROBIN", "LEAST_REQUEST"]
Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service: what clients dial (``port``) and its name, which EndpointSlices
    use to say where each endpoint listens."""

    port: int
    name: str = ""
    protocol: str = "TCP"
    app_protocol: str = ""


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    cluster_ip: str | None  # None: headless (no virtual address to match)
    ports: tuple[ServicePort, ...]
    lb_policy: LbPolicy = "ROUND_ROBIN"

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def hostname(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True)
class Endpoint:
    """One address behind a Service, with the conditions an EndpointSlice gives it.

    ``ready`` endpoints take new requests; ``serving`` but not ready ones (terminating, still
    answering) finish what they have and take no new requests; the rest are left out."""

    address: str
    ports: tuple[tuple[str, int], ...]  # (port name, port) as the slice lists them
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    pod: str | None = None

    def port_for(self, name: str) -> int | None:
        for port_name, port in self.ports:
            if port_name == name:
                return port
        return None


@dataclass(frozen=True)
class Workload:
    """A pod whose proxy may connect: what its identity and its own config depend on."""

    namespace: str
    name: str
    uid: str = ""
    ip: str = ""
    service_account: str = "default"
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    container_ports: tuple[int, ...] = ()
    # (port, path) of the kubelet's HTTP and gRPC probes: under STRICT mutual TLS they are the
    # only plaintext requests the pod's proxy still lets in
    probes: tuple[tuple[int, str], ...] = ()

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    def spiffe_id(self, trust_domain: str) -> str:
        return spiffe.spiffe_id(trust_domain, self.namespace, self.service_account)


@dataclass(frozen=True)
class Namespace:
    """A namespace's labels: its mutual TLS mode is one of them."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()
