"""The L7 half of the bootstrap: what the capture listeners do with HTTP, and the HTTP clusters.

:mod:`mesh.envoy.capture` owns the listeners and their TCP passthrough; this module adds, from a
:class:`~mesh.overrides.traffic.TrafficPolicy`:

- protocol detection: the ``http_inspector`` listener filter tags HTTP/1.x and h2c connections,
  a filter chain matching those tags runs the HTTP connection manager, and everything else
  (including any connection the inspector gave up on) falls through to TCP passthrough. Opaque
  ports skip the inspector entirely (``filter_disabled``), so a server-first protocol never waits;
- outbound: one ORIGINAL_DST cluster (the app already chose the destination, and with capture we
  have no other source of endpoints), with timeouts and retries on the route, the retry budget
  and circuit breakers on the cluster, outlier detection per destination host;
- inbound: fault injection, then the app, reached from 127.0.0.6 like the TCP passthrough; a
  request it could not deliver is answered with the ``meshinject-not-delivered`` header, which
  the caller's proxy retries as it retries its own connect failures (docs/proxy.md);
- telemetry: fixed stat prefixes (``http.outbound_http.*``, ``cluster.outbound_http.*``, and the
  same for inbound) and Json access logs on stdout.

Pure: plain dicts in, plain dicts out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from mesh.contract import INBOUND_SOURCE4, INBOUND_SOURCE6, NOT_DELIVERED_HEADER
from mesh.envoy.base import (
    ADS_SOURCE,
    FAULT,
    HTTP_CONNECTION_MANAGER,
    HTTP_INSPECTOR,
    HTTP_PROTOCOL_OPTIONS,
    PREVIOUS_HOSTS,
    ROUTER,
    STDOUT_ACCESS_LOG,
    Json,
    fraction,
    seconds,
)
from mesh.overrides.traffic import Fault, TrafficPolicy
from mesh.overrides.values import UINT32

Direction = Literal["inbound", "outbound"]

HTTP_PROTOCOLS = ("http/1.0", "http/1.1", "h2c")
# Envoy's response flags for a request the inbound proxy answered without sending it to the app:
# connecting to the app failed (UF), no host (UH), a breaker overflowed (UO). Nothing of such a
# request reached the app, so the caller's proxy may retry it whatever its method.
NOT_DELIVERED_FLAGS = ("UF", "UH", "UO")

# One JSON object per request; names follow Envoy's command operators, kept short and stable.
ACCESS_LOG_FIELDS: dict[str, str] = {
    "start_time": "%START_TIME%",
    "direction": "",  # filled per listener
    "method": "%REQ(:METHOD)%",
    "authority": "%REQ(:AUTHORITY)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "downstream_peer": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "user_agent": "%REQ(USER-AGENT)%",
}


def inbound_bind() -> Json:
    """The source of every connection to the app, TCP or HTTP: mesh-init lets both back out
    uncaptured (and assigns ::6 to lo where the pod has IPv6).

    ``freebind``: the bind never fails for want of the address. Without it a failed bind did
    not stop Envoy from connecting with the source the kernel picks, the pod's own address, so
    the "proxy to own pod address goes inbound" rule sent the connection back to 15006: one
    client connection became 1,025 before a circuit breaker stopped it. With it, a pod missing
    ::6 gets one connection that cannot complete (a timeout), never a loop.
    """
    return {
        "source_address": {"address": INBOUND_SOURCE4, "port_value": 0},
        # Envoy picks the source of the upstream's family
        "extra_source_addresses": [{"address": {"address": INBOUND_SOURCE6, "port_value": 0}}],
        "freebind": True,
    }


def cluster_name(direction: Direction) -> str:
    return f"{direction}_http"


def detection_listener_filter(policy: TrafficPolicy) -> Json:
    """The http_inspector, disabled on opaque ports so it never waits for a client that won't
    speak first. Goes after the original_dst filter, which restores the port it matches on."""
    inspector: Json = {
        "name": "envoy.filters.listener.http_inspector",
        "typed_config": {"@type": HTTP_INSPECTOR},
    }
    rules = [
        {"destination_port_range": {"start": r.first, "end": r.last + 1}}
        for r in policy.opaque_ports
    ]
    if len(rules) == 1:
        inspector["filter_disabled"] = rules[0]
    elif rules:
        inspector["filter_disabled"] = {"or_match": {"rules": rules}}
    return inspector


def listener_options(policy: TrafficPolicy, *, direction: Direction) -> Json:
    """Listener fields: how long detection may wait before the connection goes on as TCP, and
    the direction (the preStop drains only inbound listeners: the app's calls go on)."""
    return {
        "listener_filters_timeout": seconds(policy.detection_timeout_ms),
        "continue_on_listener_filters_timeout": True,
        "traffic_direction": direction.upper(),
    }


# One JSON object per TCP connection that was not HTTP (opaque ports, TLS, databases, ...).
TCP_ACCESS_LOG_FIELDS: dict[str, str] = {
    "start_time": "%START_TIME%",
    "direction": "",
    "protocol": "tcp",
    "response_flags": "%RESPONSE_FLAGS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_host": "%UPSTREAM_HOST%",
    "downstream_peer": "%DOWNSTREAM_REMOTE_ADDRESS%",
}


def access_log(direction: Direction, *, tcp: bool = False) -> Json:
    """The Json-lines logger on stdout (``kubectl logs -c mesh-proxy``); ``tcp`` for the
    passthrough chains, which log a connection rather than a request."""
    fields = {**(TCP_ACCESS_LOG_FIELDS if tcp else ACCESS_LOG_FIELDS), "direction": direction}
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": STDOUT_ACCESS_LOG,
            "log_format": {"json_format": fields},
        },
    }


def _fault_filter(delay: Fault | None, abort: Fault | None) -> Json:
    config: Json = {"@type": FAULT}
    if delay is not None:
        config["delay"] = {"fixed_delay": seconds(delay.value),
                           "percentage": fraction(delay.percent)}
    if abort is not None:
        config["abort"] = {"http_status": abort.value, "percentage": fraction(abort.percent)}
    return {"name": "envoy.filters.http.fault", "typed_config": config}


def retry_policy(policy: TrafficPolicy, *, other_hosts: bool = False) -> Json:
    """The outbound retry policy. ``connect-failure`` means "the app was never reached" across
    the mesh hop too: with it, a peer proxy's not-delivered answer is retried like our own
    failed connect (that 503 says the server's proxy failed to connect to its app).
    ``other_hosts`` sends each retry to an endpoint not yet tried (a Service's cluster has
    several; an original-destination cluster has only the one)."""
    retry: Json = {
        "retry_on": ",".join(policy.retry_on),
        "num_retries": policy.retries,
        "retry_back_off": {
            "base_interval": seconds(policy.retry_backoff_ms),
            "max_interval": seconds(policy.retry_backoff_ms * 10),
        },
    }
    if policy.retriable_status_codes:
        retry["retriable_status_codes"] = list(policy.retriable_status_codes)
    if "connect-failure" in policy.retry_on:
        retry["retry_on"] += ",retriable-headers"
        retry["retriable_headers"] = [{"name": NOT_DELIVERED_HEADER, "present_match": True}]
    if policy.per_try_timeout_ms:
        retry["per_try_timeout"] = seconds(policy.per_try_timeout_ms)
    if other_hosts:
        retry["retry_host_predicate"] = [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": PREVIOUS_HOSTS},
        }]
        retry["host_selection_retry_max_attempts"] = 5
    return retry


def route_config(policy: TrafficPolicy, *, direction: Direction) -> Json:
    """One catch-all route to the direction's cluster. Only outbound retries and times out:
    the caller's proxy owns the request's policy, the inbound side just delivers it. Both strip
    the not-delivered header from what they pass on: only an inbound proxy's own answer may
    carry it (never an app's), and no app sees it (an app that relays responses would otherwise
    hand its caller's proxy a reason to retry a request the app did receive)."""
    action: Json = {"cluster": cluster_name(direction), "timeout": "0s"}
    if direction == "outbound":
        action["timeout"] = seconds(policy.timeout_ms)
        if policy.retries and policy.retry_on:
            action["retry_policy"] = retry_policy(policy)
    return {
        "name": cluster_name(direction),
        "response_headers_to_remove": [NOT_DELIVERED_HEADER],
        "virtual_hosts": [{
            "name": direction,
            "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": action}],
        }],
    }


def http_connection_manager(
    policy: TrafficPolicy, *, direction: Direction, rds: str | None = None,
    stat_prefix: str | None = None, first_filters: Sequence[Json] = (),
    options: Mapping[str, Any] | None = None, peer_identity: bool = False,
) -> Json:
    """The HTTP connection manager of a capture listener's HTTP chain: the direction's catch-all
    route inline, or the route configuration ``rds`` names, fetched over xDS. ``first_filters``
    run before everything else (authorization), ``options`` are what they need of the manager
    (authorization's path normalization); ``peer_identity`` (a mutual TLS chain) tells the app
    who called in ``x-forwarded-client-cert``, which is otherwise removed, so no caller can
    claim an identity by sending the header itself."""
    filters: list[Json] = list(first_filters)
    if direction == "inbound" and (policy.fault_delay or policy.fault_abort):
        filters.append(_fault_filter(policy.fault_delay, policy.fault_abort))
    filters.append({
        "name": "envoy.filters.http.router",
        # no x-envoy-* headers added: the app sees the request its peer sent
        "typed_config": {"@type": ROUTER,
                         "suppress_envoy_headers": True},
    })
    hcm: Json = {
        "@type": HTTP_CONNECTION_MANAGER,
        "stat_prefix": stat_prefix or cluster_name(direction),
        "codec_type": "AUTO",
        "http_filters": filters,
        "http_protocol_options": {"accept_http_10": True},
        "server_header_transformation": "PASS_THROUGH",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        **(options or {}),
    }
    if rds is None:
        hcm["route_config"] = route_config(policy, direction=direction)
    else:
        hcm["rds"] = {"config_source": ADS_SOURCE, "route_config_name": rds}
    if policy.access_log:
        hcm["access_log"] = [access_log(direction)]
    if direction == "inbound":
        hcm["local_reply_config"] = not_delivered_reply()
        if peer_identity:
            hcm["forward_client_cert_details"] = "SANITIZE_SET"
            hcm["set_current_client_cert_details"] = {"uri": True}
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


def not_delivered_reply() -> Json:
    """Mark the inbound proxy's own answer to a request that never reached the app (added after
    the route's header removal, so it survives it)."""
    return {"mappers": [{
        "filter": {"response_flag_filter": {"flags": list(NOT_DELIVERED_FLAGS)}},
        "headers_to_add": [{"header": {"key": NOT_DELIVERED_HEADER, "value": "%RESPONSE_FLAGS%"},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
    }]}


def http_filter_chain(policy: TrafficPolicy, *, direction: Direction,
                      first_filters: Sequence[Json] = (),
                      options: Mapping[str, Any] | None = None) -> Json:
    """The chain for connections the inspector recognised as HTTP; the rest stay TCP."""
    return {
        "name": f"{direction}_http",
        "filter_chain_match": {"application_protocols": list(HTTP_PROTOCOLS)},
        "filters": [http_connection_manager(policy, direction=direction,
                                            first_filters=first_filters, options=options)],
    }


def thresholds(*, connections: int, pending: int, requests: int) -> Json:
    return {"max_connections": connections, "max_pending_requests": pending,
            "max_requests": requests, "max_retries": UINT32}


def _cluster(direction: Direction) -> Json:
    return {
        "name": cluster_name(direction),
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "5s",
        # h2c in, h2 out; HTTP/1.1 in, HTTP/1.1 out: the app's protocol is preserved
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS,
                "use_downstream_protocol_config": {
                    "http_protocol_options": {}, "http2_protocol_options": {},
                },
            },
        },
    }


def outbound_cluster(policy: TrafficPolicy) -> Json:
    """All outbound HTTP: the breakers count every destination of the pod together, outlier
    detection tracks each destination (ip:port) on its own."""
    cluster = _cluster("outbound")
    # One upstream connection per app connection, never shared between them: behind a Service
    # VIP the node picks an endpoint per connection, and a pool shared by all the app's
    # connections would pin every request to the first endpoint it reached.
    cluster["connection_pool_per_downstream_connection"] = True
    cluster["circuit_breakers"] = circuit_breakers(policy)
    if policy.outlier_consecutive_5xx:
        # every host is a different destination: ejecting one never starves another
        cluster["outlier_detection"] = outlier_detection(policy, max_percent=100)
    return cluster


def circuit_breakers(policy: TrafficPolicy) -> Json:
    """The client's limits on one cluster, with the retry budget that keeps retries a fraction
    of the requests in flight."""
    limits = thresholds(connections=policy.max_connections,
                        pending=policy.max_pending_requests, requests=policy.max_requests)
    limits["retry_budget"] = {
        "budget_percent": {"value": policy.retry_budget_percent},
        "min_retry_concurrency": policy.retry_min_concurrency,
    }
    return {"thresholds": [limits]}


def outlier_detection(policy: TrafficPolicy, *, max_percent: int) -> Json:
    """Ejection after consecutive 5xx, for the policy's ejection time, doubling on repeats."""
    ejection = policy.outlier_ejection_time_ms
    return {
        "consecutive_5xx": policy.outlier_consecutive_5xx,
        "base_ejection_time": seconds(ejection),
        "max_ejection_time": seconds(max(ejection, 300_000)),
        "interval": seconds(min(ejection, 10_000)),
        "max_ejection_percent": max_percent,
    }


def inbound_cluster() -> Json:
    """The local app, from 127.0.0.6 so its replies are not captured again; no limits of ours
    (Envoy's default of 1,024 would cap the pod's concurrency for no reason)."""
    cluster = _cluster("inbound")
    cluster["upstream_bind_config"] = inbound_bind()
    cluster["circuit_breakers"] = {
        "thresholds": [thresholds(connections=UINT32, pending=UINT32, requests=UINT32)]
    }
    return cluster


def clusters(policy: TrafficPolicy) -> list[Json]:
    return [outbound_cluster(policy), inbound_cluster()]
