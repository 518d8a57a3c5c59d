"""A small ADS client speaking to the real control plane as Envoy does, for tests and the
benchmark: it subscribes, ACKs (or NACKs) every response, and records what it was sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


@dataclass
class Received:
    responses: list[discovery_pb2.DiscoveryResponse] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)  # type -> last ACKed version
    names: dict[str, set[str]] = field(default_factory=dict)  # type -> names ever received


class AdsClient:
    """One proxy's stream. ``nack`` is a set of type URLs whose responses it refuses."""

    def __init__(self, channel: grpc.aio.Channel, *, namespace: str, pod: str, token: str,
                 nack: frozenset[str] = frozenset(), keep: bool = True) -> None:
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.namespace, self.pod, self.token = namespace, pod, token
        self.nack = nack
        self.keep = keep  # keep every response (tests); a benchmark's thousand clients do not
        self.queue: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self.got = Received()
        self.event = asyncio.Event()
        self.status: grpc.StatusCode | None = None  # how the stream ended
        self.details = ""
        self._subscribed: dict[str, list[str]] = {}

    def _node(self) -> base_pb2.Node:
        metadata = struct_pb2.Struct()
        metadata.update({"namespace": self.namespace, "pod": self.pod})
        return base_pb2.Node(id=f"{self.pod}.{self.namespace}", metadata=metadata)

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (request := await self.queue.get()) is not None:
            yield request

    def request(self, type_url: str, names: list[str] | None = None, *, version: str = "",
                nonce: str = "", error: str = "") -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=names or [], version_info=version,
            response_nonce=nonce)
        if not self._subscribed:
            request.node.CopyFrom(self._node())
        if error:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._subscribed[type_url] = list(names or [])
        self.queue.put_nowait(request)

    async def run(self, *, silent: bool = False) -> None:
        """Start with CDS and LDS as Envoy does; follow each response as Envoy would.
        ``silent``: send nothing, only hear how the server ends the stream (a request already
        in flight when the server refuses can make the call end INTERNAL on the client)."""
        if not silent:  # LDS follows the first response: a refused stream has one request
            self.request(CLUSTER)
        call = self.stub.StreamAggregatedResources(
            self._requests(), metadata=(("authorization", f"Bearer {self.token}"),))
        try:
            async for response in call:
                self._handle(response)
        except grpc.aio.AioRpcError:
            pass  # the call's own status (below) says why; a failed send may mask it here
        finally:
            self.status, self.details = await call.code(), await call.details() or ""
            self.event.set()

    def _handle(self, response: discovery_pb2.DiscoveryResponse) -> None:
        if LISTENER not in self._subscribed:
            self.request(LISTENER)
        if self.keep:
            self.got.responses.append(response)
        names, follow = _parsed(response)
        self._after(response, names, follow)

    def _after(self, response: discovery_pb2.DiscoveryResponse, names: set[str],
               follow: set[str]) -> None:
        kind = response.type_url
        self.got.names.setdefault(kind, set()).update(names)
        previous = self.got.versions.get(kind, "")
        if kind in self.nack:
            self.request(kind, self._subscribed.get(kind), version=previous,
                         nonce=response.nonce, error="refused by the test")
        else:
            self.got.versions[kind] = response.version_info
            self.request(kind, self._subscribed.get(kind), version=response.version_info,
                         nonce=response.nonce)
        if kind == CLUSTER and follow:
            self.request(ENDPOINT, sorted(follow))
        if kind == LISTENER and follow:
            self.request(ROUTE, sorted(follow))
        self.event.set()

    def close(self) -> None:
        self.queue.put_nowait(None)


# Every client of a process gets the same responses (a set's version is its content): parse
# each once. Partial responses (EDS, RDS) are told apart by their size and first resource.
_PARSED: dict[tuple[str, str, int, bytes], tuple[set[str], set[str]]] = {}


def _parsed(response: discovery_pb2.DiscoveryResponse) -> tuple[set[str], set[str]]:
    """(names, what to subscribe next) of a response, as Envoy reads it."""
    kind = response.type_url
    first = response.resources[0].value[:64] if response.resources else b""
    key = (kind, response.version_info, len(response.resources), first)
    if key in _PARSED:
        return _PARSED[key]
    names = set()
    follow: set[str] = set()
    for item in response.resources:
        if kind == CLUSTER:
            cluster = cluster_pb2.Cluster()
            item.Unpack(cluster)
            names.add(cluster.name)
            if cluster.HasField("eds_cluster_config"):
                follow.add(cluster.eds_cluster_config.service_name)
        elif kind == ENDPOINT:
            cla = endpoint_pb2.ClusterLoadAssignment()
            item.Unpack(cla)
            names.add(cla.cluster_name)
        elif kind == LISTENER:
            listener = listener_pb2.Listener()
            item.Unpack(listener)
            names.add(listener.name)
            follow |= _route_names(listener)
        else:
            names.add(item.type_url)
    if len(_PARSED) > 10_000:
        _PARSED.clear()
    _PARSED[key] = (names, follow)
    return names, follow


def _route_names(listener: listener_pb2.Listener) -> set[str]:
    """The RDS names a listener's HTTP connection managers ask for, as Envoy would."""
    names = set()
    for chain in listener.filter_chains:
        for item in chain.filters:
            if item.typed_config.type_url.endswith("HttpConnectionManager"):
                manager = hcm_pb2.HttpConnectionManager()
                item.typed_config.Unpack(manager)
                if manager.HasField("rds"):
                    names.add(manager.rds.route_config_name)
    return names


def endpoints_of(response: discovery_pb2.DiscoveryResponse) -> dict[str, list[str]]:
    """cluster -> endpoint addresses, from an EDS response."""
    out: dict[str, list[str]] = {}
    for item in response.resources:
        cla = endpoint_pb2.ClusterLoadAssignment()
        item.Unpack(cla)
        out[cla.cluster_name] = [e.endpoint.address.socket_address.address
                                 for group in cla.endpoints for e in group.lb_endpoints]
    return out
