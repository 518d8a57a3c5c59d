"""The inbound capture listener: mutual TLS from other proxies, and plaintext by the pod's mode.

After the loop guard its chains are, in order:

1. ``inbound-mtls-http``: TLS whose SNI ends in the mesh suffix and whose ALPN is HTTP (a
   client proxy's HTTP connection pool sets it): mutual TLS is terminated, the caller's SPIFFE
   ID goes to the app in ``x-forwarded-client-cert``, then the usual inbound HTTP handling.
2. ``inbound-mtls-tcp``: the same TLS without HTTP ALPN (a client proxy's TCP proxy): mutual
   TLS terminated, the bytes passed to the app.
3. Plaintext. ``PERMISSIVE``: the HTTP chain and the TCP passthrough as before, for callers
   outside the mesh. ``STRICT``: only the kubelet's probes (the pod's own HTTP and gRPC probe
   paths, on their ports) get in; any other plaintext connection matches no chain and is
   closed. So probes keep working without rewriting the user's pod spec, the way Linkerd
   authorizes them.

TLS that does not carry the mesh's SNI (an app's own TLS, spoken by a client outside the mesh)
is plaintext to the proxy: it passes through in PERMISSIVE and is refused in STRICT.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.envoy import capture, tls
from mesh.envoy import http as envoy_http
from mesh.envoy.base import HTTP_RBAC, TLS_INSPECTOR, Json
from mesh.overrides.pod import PodOverrides
from mesh.overrides.values import MtlsMode

HTTP_ALPN = ("h2", "http/1.1")


@dataclass(frozen=True)
class InboundSecurity:
    """What of a pod its inbound listener's security depends on (part of its view key)."""

    mode: MtlsMode = "PERMISSIVE"
    probes: tuple[tuple[int, str], ...] = ()  # (port, path) the kubelet requests


PERMISSIVE = InboundSecurity()  # a pod nothing asks more of


def probe_filter(probes: tuple[tuple[int, str], ...]) -> Json:
    """An RBAC filter that lets in exactly the probes' requests (and nothing when there are
    none: an ALLOW filter without policies denies all)."""
    rules: Json = {"action": "ALLOW"}
    if probes:
        rules["policies"] = {"kubelet-probes": {
            "permissions": [{"and_rules": {"rules": [
                {"destination_port": port}, {"url_path": {"path": {"exact": path}}}]}}
                for port, path in probes],
            "principals": [{"any": True}],
        }}
    return {"name": "envoy.filters.http.rbac",
            "typed_config": {"@type": HTTP_RBAC, "rules_stat_prefix": "plaintext_",
                             "rules": rules}}


def _mesh_chains(overrides: PodOverrides) -> list[Json]:
    policy = overrides.traffic
    http: Json = {
        "name": "inbound-mtls-http",
        "filter_chain_match": {**tls.mesh_chain_match(), "application_protocols": [*HTTP_ALPN]},
        "transport_socket": tls.downstream_socket(alpn=HTTP_ALPN),
        "filters": [envoy_http.http_connection_manager(
            policy, direction="inbound", stat_prefix="inbound_mtls_http", peer_identity=True)],
    }
    tcp: Json = {
        "name": "inbound-mtls-tcp",
        "filter_chain_match": tls.mesh_chain_match(),
        "transport_socket": tls.downstream_socket(),
        "filters": [capture.tcp_proxy(stat_prefix="inbound_mtls_tcp",
                                      cluster=capture.INBOUND_PASSTHROUGH)],
    }
    return [http, tcp]


def inbound_listener(overrides: PodOverrides, security: InboundSecurity) -> Json:
    policy = overrides.traffic
    extras = capture.l7_extras(overrides, "inbound")
    detection = extras["listener_filters"]
    tls_inspector = {"name": "envoy.filters.listener.tls_inspector",
                     "typed_config": {"@type": TLS_INSPECTOR}}
    passthrough: Json | None = capture.tcp_proxy(
        stat_prefix="inbound", cluster=capture.INBOUND_PASSTHROUGH,
        access_log=envoy_http.access_log("inbound", tcp=True) if policy.access_log else None)
    plaintext = extras["chains"]
    if security.mode == "STRICT":
        passthrough = None
        plaintext = [envoy_http.http_filter_chain(
            policy, direction="inbound", first_filters=[probe_filter(security.probes)])
        ] if security.probes else []
    return capture.capture_listener(
        name="inbound", port=overrides.capture.inbound_port, passthrough=passthrough,
        overrides=overrides, listener_filters=[tls_inspector, *detection],
        chains=[*_mesh_chains(overrides), *plaintext], options=extras["options"])
