"""What every Envoy resource here is made of: JSON dicts, type URLs, addresses, durations.

Envoy takes its configuration as protobuf JSON; building it as plain dicts keeps every resource
printable, diffable and testable without Envoy, and lets the control plane convert the same
dicts to protobuf at its edge.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

EXTENSIONS = "type.googleapis.com/envoy.extensions."  # the prefix of every extension's type URL

# the type URLs of the extensions we configure, by what they are
TCP_PROXY = EXTENSIONS + "filters.network.tcp_proxy.v3.TcpProxy"
HTTP_CONNECTION_MANAGER = (
    EXTENSIONS + "filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER = EXTENSIONS + "filters.http.router.v3.Router"
FAULT = EXTENSIONS + "filters.http.fault.v3.HTTPFault"
ORIGINAL_DST = EXTENSIONS + "filters.listener.original_dst.v3.OriginalDst"
HTTP_INSPECTOR = EXTENSIONS + "filters.listener.http_inspector.v3.HttpInspector"
HTTP_RBAC = EXTENSIONS + "filters.http.rbac.v3.RBAC"
NETWORK_RBAC = EXTENSIONS + "filters.network.rbac.v3.RBAC"
TLS_INSPECTOR = EXTENSIONS + "filters.listener.tls_inspector.v3.TlsInspector"
UPSTREAM_TLS = EXTENSIONS + "transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = EXTENSIONS + "transport_sockets.tls.v3.DownstreamTlsContext"
STDOUT_ACCESS_LOG = EXTENSIONS + "access_loggers.stream.v3.StdoutAccessLog"
HTTP_PROTOCOL_OPTIONS = EXTENSIONS + "upstreams.http.v3.HttpProtocolOptions"
PREVIOUS_HOSTS = EXTENSIONS + "retry.host.previous_hosts.v3.PreviousHostsPredicate"
DOWNSTREAM_CONNECTIONS = (
    EXTENSIONS + "resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)


# resources fetched over the proxy's one ADS stream
ADS_SOURCE: Json = {"ads": {}, "resource_api_version": "V3"}


def socket_address(address: str, port: int) -> Json:
    return {"socket_address": {"address": address, "port_value": port}}


def any_address(port: int) -> Json:
    """Every IPv4 address as the listener's address, every IPv6 one as an additional address:
    mesh-init captures IPv6 too where the pod has it, and IPv6-only kubelets probe over IPv6."""
    return {
        "address": socket_address("0.0.0.0", port),
        "additional_addresses": [{"address": socket_address("::", port)}],
    }


def seconds(ms: int) -> str:
    """Milliseconds as a protobuf JSON Duration ("0.250s")."""
    return f"{ms / 1000:.3f}s"


def fraction(percent: float) -> Json:
    """A percentage as a FractionalPercent, in millionths so "0.5" keeps its precision."""
    return {"numerator": round(percent * 10_000), "denominator": "MILLION"}
