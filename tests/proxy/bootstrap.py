"""A whole bootstrap around the L7 parts, for tests that must not wait on the full renderer.

Mirrors the base the core renders (admin on loopback, capture listeners with original_dst,
TCP passthrough, inbound from 127.0.0.6) in the fewest lines, so the L7 pieces can be started
in a real Envoy on their own.
"""

from __future__ import annotations

from typing import Any

from injector import envoy_http
from injector.traffic_policy import TrafficPolicy

JSON = dict[str, Any]
_T = "type.googleapis.com/envoy.extensions."


def _tcp(cluster: str, stat: str, log: JSON | None = None) -> JSON:
    config: JSON = {"@type": _T + "filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": stat, "cluster": cluster}
    if log is not None:
        config["access_log"] = [log]
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": config}


def _listener(policy: TrafficPolicy, direction: envoy_http.Direction, port: int) -> JSON:
    passthrough = f"{direction}_passthrough"
    return {
        "name": direction,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "use_original_dst": True,
        "listener_filters": [
            {"name": "envoy.filters.listener.original_dst", "typed_config": {
                "@type": _T + "filters.listener.original_dst.v3.OriginalDst"}},
            envoy_http.detection_listener_filter(policy),
        ],
        **envoy_http.listener_options(policy, direction=direction),
        "filter_chains": [
            {"filter_chain_match": {"destination_port": port},
             "filters": [_tcp("blackhole", "loop")]},
            envoy_http.http_filter_chain(policy, direction=direction),
        ],
        "default_filter_chain": {"filters": [_tcp(
            passthrough, passthrough,
            envoy_http.access_log(direction, tcp=True) if policy.access_log else None,
        )]},
    }


def bootstrap(policy: TrafficPolicy) -> JSON:
    passthrough: list[JSON] = [
        {"name": "outbound_passthrough", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
         "connect_timeout": "5s"},
        {"name": "inbound_passthrough", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
         "connect_timeout": "5s", "upstream_bind_config": {
             "source_address": {"address": "127.0.0.6", "port_value": 0}}},
        {"name": "blackhole", "type": "STATIC", "connect_timeout": "1s"},
    ]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
        "static_resources": {
            "listeners": [
                _listener(policy, "outbound", 15001),
                _listener(policy, "inbound", 15006),
            ],
            "clusters": [*passthrough, *envoy_http.clusters(policy)],
        },
    }
