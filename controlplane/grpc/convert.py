"""Resource dicts -> protobuf ``Any``, once per resource version.

Translation builds protobuf JSON; ``json_format.ParseDict`` turns it into the typed message,
which also checks every field name and type (a translation bug fails here, loudly, before any
proxy sees it). The result depends only on the resource's content, so it is cached by type and
version: a cluster shared by a thousand proxies is converted once.
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


class Converter:
    """Packs resources into ``Any``, remembering the last few thousand by version."""

    def __init__(self, *, size: int = _CACHE_SIZE) -> None:
        self._cache: OrderedDict[tuple[str, str, str], any_pb2.Any] = OrderedDict()
        self._size = size
        self.conversions = 0

    def to_any(self, type_url: str, resource: Resource) -> any_pb2.Any:
        key = (type_url, resource.name, resource.version)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        message = MESSAGES[type_url]()
        try:
            json_format.ParseDict(resource.body, message)
        except json_format.ParseError as err:
            raise ConversionError(f"{type_url.rsplit('.', 1)[-1]} {resource.name}: {err}") from err
        packed = any_pb2.Any()
        packed.Pack(message)
        self.conversions += 1
        self._cache[key] = packed
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return packed
