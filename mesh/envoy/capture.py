"""The capture side of the proxy, as plain data: listeners and passthrough clusters, loop-free.

Two capture listeners take what mesh-init redirects: outbound on 15001 and inbound on 15006.
Each restores the original destination (``original_dst`` listener filter) and passes the bytes
to an ORIGINAL_DST cluster, i.e. on to where the connection was going anyway. A connection
addressed to the capture port itself would be passed to itself forever, so each listener has a
filter chain matching its own port that leads to a cluster with no endpoints. Inbound
passthrough binds its source to 127.0.0.6 (``::6`` for IPv6, which mesh-init assigns to ``lo``):
the app sees a loopback peer, and mesh-init's rules let that traffic back out without capturing
it again.

The listeners and clusters are built by small functions so the L7 module can swap the default
TCP chains for HTTP ones without re-stating the rest. The admin API listens on 127.0.0.1 only;
readiness (15021) and Prometheus (15090) are exposed through tiny HTTP listeners that route to
the admin API, so nothing but those two paths is reachable from outside the pod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mesh.contract import ADMIN_PORT
from mesh.envoy import http as envoy_http
from mesh.envoy.base import (
    HTTP_CONNECTION_MANAGER,
    ORIGINAL_DST,
    ROUTER,
    TCP_PROXY,
    Json,
    any_address,
    socket_address,
)
from mesh.overrides.pod import PodOverrides

OUTBOUND_PASSTHROUGH = "outbound-passthrough"
INBOUND_PASSTHROUGH = "inbound-passthrough"
_PASSTHROUGH = {"outbound": OUTBOUND_PASSTHROUGH, "inbound": INBOUND_PASSTHROUGH}
BLACKHOLE = "blackhole"
ADMIN_CLUSTER = "admin"

def tcp_proxy(*, stat_prefix: str, cluster: str, access_log: Json | None = None) -> Json:
    config: Json = {
        "@type": TCP_PROXY,
        "stat_prefix": stat_prefix,
        "cluster": cluster,
    }
    if access_log is not None:
        config["access_log"] = [access_log]
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": config}


def http_connection_manager(*, stat_prefix: str, routes: list[Json]) -> Json:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HTTP_CONNECTION_MANAGER,
            "stat_prefix": stat_prefix,
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
            },
            "http_filters": [{
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": ROUTER},
            }],
        },
    }


def capture_listener(
    *,
    name: str,
    port: int,
    passthrough: Sequence[Json],
    overrides: PodOverrides,
    listener_filters: Sequence[Json] = (),
    chains: Sequence[Json] = (),
    options: Mapping[str, Any] | None = None,
) -> Json:
    """A capture listener: loop guard for its own port first, then ``chains`` (the L7 module's
    HTTP chains, after its ``listener_filters``), then the default chain of the filters
    ``passthrough`` (its tcp_proxy, after any authorization; none: no default, a connection no
    chain matches is closed)."""
    listener: Json = {
        "name": name,
        **any_address(port),
        "listener_filters": [{
            "name": "envoy.filters.listener.original_dst",
            "typed_config": {"@type": ORIGINAL_DST},
        }, *listener_filters],
        "filter_chains": [{
            "name": f"{name}-loop-guard",
            "filter_chain_match": {"destination_port": port},
            "filters": [tcp_proxy(stat_prefix=f"{name}_loop", cluster=BLACKHOLE)],
        }, *chains],
        **(options or {}),
    }
    if passthrough:
        listener["default_filter_chain"] = {"name": f"{name}-passthrough",
                                            "filters": list(passthrough)}
    if overrides.capture.interception_mode == "TPROXY":
        listener["transparent"] = True
    return listener


def _connection_log(overrides: PodOverrides, direction: envoy_http.Direction) -> Json | None:
    return envoy_http.access_log(direction, tcp=True) if overrides.traffic.access_log else None


def l7_extras(overrides: PodOverrides, direction: envoy_http.Direction) -> dict[str, Any]:
    """What the L7 module adds to a capture listener: protocol detection, the HTTP chain,
    the detection timeout and the listener's direction."""
    policy = overrides.traffic
    return {
        "listener_filters": [envoy_http.detection_listener_filter(policy)],
        "chains": [envoy_http.http_filter_chain(policy, direction=direction)],
        "options": envoy_http.listener_options(policy, direction=direction),
    }


def direction_listener(direction: envoy_http.Direction, *, overrides: PodOverrides,
                       **extras: Any) -> Json:
    """The outbound or inbound capture listener. ``extras``: capture_listener's
    listener_filters, chains, options."""
    capture = overrides.capture
    return capture_listener(
        name=direction,
        port=capture.outbound_port if direction == "outbound" else capture.inbound_port,
        passthrough=[tcp_proxy(stat_prefix=direction, cluster=_PASSTHROUGH[direction],
                               access_log=_connection_log(overrides, direction))],
        overrides=overrides,
        **extras,
    )


def admin_paths_listener(*, name: str, ports: Sequence[int], paths: Mapping[str, str]) -> Json:
    """One HTTP listener, on every address of ``ports``, that exposes exactly the admin paths
    ``paths`` maps to (public path -> admin path), and nothing else of the admin API."""
    routes = []
    for public, admin in paths.items():
        route: Json = {"cluster": ADMIN_CLUSTER}
        if admin != public:
            route["prefix_rewrite"] = admin
        routes.append({"match": {"path": public}, "route": route})
    first, *more = ports
    addresses = any_address(first)
    for port in more:
        addresses["additional_addresses"] += [
            {"address": socket_address(a, port)} for a in ("0.0.0.0", "::")]
    return {
        "name": name,
        **addresses,
        "filter_chains": [{"filters": [http_connection_manager(stat_prefix=name, routes=routes)]}],
    }


def passthrough_cluster(*, name: str, bind: Json | None = None) -> Json:
    """An ORIGINAL_DST cluster: connect to wherever the captured connection was going."""
    cluster: Json = {
        "name": name,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "10s",
    }
    if bind is not None:
        cluster["upstream_bind_config"] = bind
    return cluster


def passthrough_clusters() -> list[Json]:
    """The clusters the capture listeners' TCP chains use: on to the original destination
    (inbound from 127.0.0.6), and the loop guard's cluster with no endpoints."""
    return [
        passthrough_cluster(name=OUTBOUND_PASSTHROUGH),
        passthrough_cluster(name=INBOUND_PASSTHROUGH, bind=envoy_http.inbound_bind()),
        {"name": BLACKHOLE, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": BLACKHOLE, "endpoints": []}},
    ]


def admin_cluster() -> Json:
    """Envoy's own admin API, behind the readiness and Prometheus listeners."""
    return {"name": ADMIN_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": ADMIN_CLUSTER, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": socket_address("127.0.0.1", ADMIN_PORT)}}]}]}}


def clusters() -> list[Json]:
    return [*passthrough_clusters(), admin_cluster()]
