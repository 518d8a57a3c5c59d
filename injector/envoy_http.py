"""The L7 half of the bootstrap: what the capture listeners do with HTTP, and the HTTP clusters.

:mod:`injector.envoy` owns the listeners and their TCP passthrough; this module adds, from a
:class:`~injector.traffic_policy.TrafficPolicy`:

- protocol detection: the ``http_inspector`` listener filter tags HTTP/1.x and h2c connections,
  a filter chain matching those tags runs the HTTP connection manager, and everything else
  (including any connection the inspector gave up on) falls through to TCP passthrough. Opaque
  ports skip the inspector entirely (``filter_disabled``), so a server-first protocol never waits;
- outbound: one ORIGINAL_DST cluster (the app already chose the destination, and with capture we
  have no other source of endpoints), with timeouts and retries on the route, the retry budget
  and circuit breakers on the cluster, outlier detection per destination host;
- inbound: fault injection, then the app, reached from 127.0.0.6 like the TCP passthrough;
- telemetry: fixed stat prefixes (``http.outbound_http.*``, ``cluster.outbound_http.*``, and the
  same for inbound) and JSON access logs on stdout.

Pure: plain dicts in, plain dicts out.
"""

from __future__ import annotations

from typing import Any, Literal

from injector.traffic_policy import UINT32, Fault, TrafficPolicy

Direction = Literal["inbound", "outbound"]
JSON = dict[str, Any]

HTTP_PROTOCOLS = ("http/1.0", "http/1.1", "h2c")
ADMIN_PORT = 15000  # the admin API, on 127.0.0.1 only (injector.envoy); the preStop calls it
INBOUND_SOURCE = "127.0.0.6"
INBOUND_SOURCE6 = "::6"
_T = "type.googleapis.com/envoy.extensions."

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


def seconds(ms: int) -> str:
    """Milliseconds as a protobuf JSON Duration ("0.250s")."""
    return f"{ms / 1000:.3f}s"


def fraction(percent: float) -> JSON:
    """A percentage as a FractionalPercent, in millionths so "0.5" keeps its precision."""
    return {"numerator": round(percent * 10_000), "denominator": "MILLION"}


def inbound_bind() -> JSON:
    """The source of every connection to the app, TCP or HTTP: mesh-init lets both back out
    uncaptured."""
    return {
        "source_address": {"address": INBOUND_SOURCE, "port_value": 0},
        # Envoy picks the source of the upstream's family
        "extra_source_addresses": [{"address": {"address": INBOUND_SOURCE6, "port_value": 0}}],
    }


def cluster_name(direction: Direction) -> str:
    return f"{direction}_http"


def proxy_args(policy: TrafficPolicy) -> list[str]:
    """Envoy flags the policy needs: the drain window the preStop hook starts (closing idle
    keep-alive connections at once, so peers reconnect elsewhere), and access logs flushed each
    second rather than Envoy's default ten."""
    return ["--drain-time-s", str(policy.drain_seconds), "--drain-strategy", "immediate",
            "--file-flush-interval-msec", "1000"]


def prestop_command(policy: TrafficPolicy, *, admin_port: int = ADMIN_PORT) -> list[str]:
    """The mesh-proxy's preStop: start Envoy's graceful drain of the inbound listener, then hold
    termination for the drain time.

    Envoy exits at once on SIGTERM, so the kubelet's SIGTERM must come only after in-flight
    requests finished and peers stopped sending here. During the drain the listener still
    accepts (endpoint removal takes a moment to reach every node) but answers each request with
    ``Connection: close``, so pooled connections move to other endpoints; the app's own outbound
    calls keep working. The admin API wants a POST (HTTP/1.1: it answers 1.0 with 426), and the
    envoyproxy/envoy image (Ubuntu) has bash but no curl: bash's /dev/tcp sends it."""
    request = ("POST /drain_listeners?graceful&inboundonly HTTP/1.1\\r\\nHost: admin\\r\\n"
               "Content-Length: 0\\r\\nConnection: close\\r\\n\\r\\n")
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{admin_port} && printf '{request}' >&3 && cat <&3 >/dev/null"
        f"; sleep {policy.drain_seconds}"
    )
    return ["/bin/bash", "-c", script]


def detection_listener_filter(policy: TrafficPolicy) -> JSON:
    """The http_inspector, disabled on opaque ports so it never waits for a client that won't
    speak first. Goes after the original_dst filter, which restores the port it matches on."""
    inspector: JSON = {
        "name": "envoy.filters.listener.http_inspector",
        "typed_config": {"@type": _T + "filters.listener.http_inspector.v3.HttpInspector"},
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


def listener_options(policy: TrafficPolicy, *, direction: Direction) -> JSON:
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


def access_log(direction: Direction, *, tcp: bool = False) -> JSON:
    """The JSON-lines logger on stdout (``kubectl logs -c mesh-proxy``); ``tcp`` for the
    passthrough chains, which log a connection rather than a request."""
    fields = {**(TCP_ACCESS_LOG_FIELDS if tcp else ACCESS_LOG_FIELDS), "direction": direction}
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": _T + "access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": fields},
        },
    }


def _fault_filter(delay: Fault | None, abort: Fault | None) -> JSON:
    config: JSON = {"@type": _T + "filters.http.fault.v3.HTTPFault"}
    if delay is not None:
        config["delay"] = {"fixed_delay": seconds(delay.value),
                           "percentage": fraction(delay.percent)}
    if abort is not None:
        config["abort"] = {"http_status": abort.value, "percentage": fraction(abort.percent)}
    return {"name": "envoy.filters.http.fault", "typed_config": config}


def _retry_policy(policy: TrafficPolicy) -> JSON:
    retry: JSON = {
        "retry_on": ",".join(policy.retry_on),
        "num_retries": policy.retries,
        "retry_back_off": {
            "base_interval": seconds(policy.retry_backoff_ms),
            "max_interval": seconds(policy.retry_backoff_ms * 10),
        },
    }
    if policy.retriable_status_codes:
        retry["retriable_status_codes"] = list(policy.retriable_status_codes)
    if policy.per_try_timeout_ms:
        retry["per_try_timeout"] = seconds(policy.per_try_timeout_ms)
    return retry


def route_config(policy: TrafficPolicy, *, direction: Direction) -> JSON:
    """One catch-all route to the direction's cluster. Only outbound retries and times out:
    the caller's proxy owns the request's policy, the inbound side just delivers it."""
    action: JSON = {"cluster": cluster_name(direction), "timeout": "0s"}
    if direction == "outbound":
        action["timeout"] = seconds(policy.timeout_ms)
        if policy.retries and policy.retry_on:
            action["retry_policy"] = _retry_policy(policy)
    return {
        "name": cluster_name(direction),
        "virtual_hosts": [{
            "name": direction,
            "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": action}],
        }],
    }


def http_connection_manager(policy: TrafficPolicy, *, direction: Direction) -> JSON:
    filters: list[JSON] = []
    if direction == "inbound" and (policy.fault_delay or policy.fault_abort):
        filters.append(_fault_filter(policy.fault_delay, policy.fault_abort))
    filters.append({
        "name": "envoy.filters.http.router",
        # no x-envoy-* headers added: the app sees the request its peer sent
        "typed_config": {"@type": _T + "filters.http.router.v3.Router",
                         "suppress_envoy_headers": True},
    })
    hcm: JSON = {
        "@type": _T + "filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": cluster_name(direction),
        "codec_type": "AUTO",
        "route_config": route_config(policy, direction=direction),
        "http_filters": filters,
        "http_protocol_options": {"accept_http_10": True},
        "server_header_transformation": "PASS_THROUGH",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
    }
    if policy.access_log:
        hcm["access_log"] = [access_log(direction)]
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


def http_filter_chain(policy: TrafficPolicy, *, direction: Direction) -> JSON:
    """The chain for connections the inspector recognised as HTTP; the rest stay TCP."""
    return {
        "name": f"{direction}_http",
        "filter_chain_match": {"application_protocols": list(HTTP_PROTOCOLS)},
        "filters": [http_connection_manager(policy, direction=direction)],
    }


def _thresholds(*, connections: int, pending: int, requests: int) -> JSON:
    return {"max_connections": connections, "max_pending_requests": pending,
            "max_requests": requests, "max_retries": UINT32}


def _cluster(direction: Direction) -> JSON:
    return {
        "name": cluster_name(direction),
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "5s",
        # h2c in, h2 out; HTTP/1.1 in, HTTP/1.1 out: the app's protocol is preserved
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "upstreams.http.v3.HttpProtocolOptions",
                "use_downstream_protocol_config": {
                    "http_protocol_options": {}, "http2_protocol_options": {},
                },
            },
        },
    }


def outbound_cluster(policy: TrafficPolicy) -> JSON:
    """All outbound HTTP: the breakers count every destination of the pod together, outlier
    detection tracks each destination (ip:port) on its own."""
    cluster = _cluster("outbound")
    # One upstream connection per app connection, never shared between them: behind a Service
    # VIP the node picks an endpoint per connection, and a pool shared by all the app's
    # connections would pin every request to the first endpoint it reached.
    cluster["connection_pool_per_downstream_connection"] = True
    thresholds = _thresholds(connections=policy.max_connections,
                             pending=policy.max_pending_requests, requests=policy.max_requests)
    thresholds["retry_budget"] = {
        "budget_percent": {"value": policy.retry_budget_percent},
        "min_retry_concurrency": policy.retry_min_concurrency,
    }
    cluster["circuit_breakers"] = {"thresholds": [thresholds]}
    if policy.outlier_consecutive_5xx:
        ejection = policy.outlier_ejection_time_ms
        cluster["outlier_detection"] = {
            "consecutive_5xx": policy.outlier_consecutive_5xx,
            "base_ejection_time": seconds(ejection),
            "max_ejection_time": seconds(max(ejection, 300_000)),
            "interval": seconds(min(ejection, 10_000)),
            # every host is a different destination: ejecting one never starves another
            "max_ejection_percent": 100,
        }
    return cluster


def inbound_cluster() -> JSON:
    """The local app, from 127.0.0.6 so its replies are not captured again; no limits of ours
    (Envoy's default of 1,024 would cap the pod's concurrency for no reason)."""
    cluster = _cluster("inbound")
    cluster["upstream_bind_config"] = inbound_bind()
    cluster["circuit_breakers"] = {
        "thresholds": [_thresholds(connections=UINT32, pending=UINT32, requests=UINT32)]
    }
    return cluster


def clusters(policy: TrafficPolicy) -> list[JSON]:
    return [outbound_cluster(policy), inbound_cluster()]
