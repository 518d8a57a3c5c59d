"""Resource dicts -> protobuf, once per resource version, and responses as wire bytes.

Translation builds protobuf JSON; ``json_format.ParseDict`` turns it into the typed message,
which also checks every field name and type (a translation bug fails here, loudly, before any
proxy sees it). The result depends only on the resource's content, so it is cached by type and
version: a cluster shared by a thousand proxies is converted once.

Responses are sent as bytes this module writes: a DiscoveryResponse is four fields, and its
``resources`` are the cached ``Any`` bytes, framed once. So a push of the same thousand
clusters to a thousand proxies serializes them once, not a thousand times, and holds one copy.
"""

from __future__ import annotations

from collections import OrderedDict

# every message a resource may carry in an Any must be registered before parsing
import envoy.extensions.access_loggers.stream.v3.stream_pb2
import envoy.extensions.filters.http.fault.v3.fault_pb2
import envoy.extensions.filters.http.rbac.v3.rbac_pb2
import envoy.extensions.filters.http.router.v3.router_pb2
import envoy.extensions.filters.listener.http_inspector.v3.http_inspector_pb2
import envoy.extensions.filters.listener.original_dst.v3.original_dst_pb2
import envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2
import envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2
import envoy.extensions.filters.network.rbac.v3.rbac_pb2
import envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2
import envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2
import envoy.extensions.transport_sockets.tls.v3.tls_pb2
import envoy.extensions.upstreams.http.v3.http_protocol_options_pb2  # noqa: F401
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from controlplane.cache.snapshot import Resource
from mesh.errors import MeshError

MESSAGES: dict[str, type[Message]] = {
    "type.googleapis.com/envoy.config.listener.v3.Listener": listener_pb2.Listener,
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": cluster_pb2.Cluster,
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": route_pb2.RouteConfiguration,
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment":
        endpoint_pb2.ClusterLoadAssignment,
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret": secret_pb2.Secret,
}
_CACHE_SIZE = 20_000


class ConversionError(MeshError):
    """A resource does not fit its protobuf type: a translation bug, never pushed."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, data: bytes) -> bytes:
    """One length-delimited protobuf field (strings, bytes, messages)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


# DiscoveryResponse's field numbers (envoy/service/discovery/v3/discovery.proto)
_VERSION, _RESOURCES, _TYPE_URL, _NONCE = 1, 2, 4, 5


def response(*, version: str, resources: bytes, type_url: str, nonce: str) -> bytes:
    """A serialized DiscoveryResponse; ``resources`` are already framed (see ``framed``)."""
    return (field(_VERSION, version.encode()) + resources + field(_TYPE_URL, type_url.encode())
            + field(_NONCE, nonce.encode()))


class Converter:
    """Packs resources into ``Any`` and frames them as a response's ``resources`` field,
    remembering the last few thousand by version (and whole sets, for full pushes)."""

    def __init__(self, *, size: int = _CACHE_SIZE) -> None:
        self._cache: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._sets: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = size
        self.conversions = 0

    def to_any(self, type_url: str, resource: Resource) -> any_pb2.Any:
        """The resource as an ``Any`` message (converted afresh: for tests and debugging)."""
        message = MESSAGES[type_url]()
        try:
            json_format.ParseDict(resource.body, message)
        except json_format.ParseError as err:
            raise ConversionError(f"{type_url.rsplit('.', 1)[-1]} {resource.name}: {err}") from err
        packed = any_pb2.Any()
        packed.Pack(message)
        return packed

    def framed(self, type_url: str, resource: Resource) -> bytes:
        """The resource as one ``resources`` entry of a response, converted once."""
        key = (type_url, resource.name, resource.version)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        data = field(_RESOURCES, self.to_any(type_url, resource).SerializeToString())
        self.conversions += 1
        self._cache[key] = data
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return data

    def framed_set(self, type_url: str, version: str, resources: list[Resource]) -> bytes:
        """Every resource of a set, framed: shared by every stream sending that set whole."""
        key = (type_url, version)
        found = self._sets.get(key)
        if found is None:
            found = b"".join(self.framed(type_url, r) for r in resources)
            self._sets[key] = found
            if len(self._sets) > 64:
                self._sets.popitem(last=False)
        return found
