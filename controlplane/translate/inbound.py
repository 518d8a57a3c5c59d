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

Authorization: a pod that AccessPolicies select gets their RBAC (:mod:`mesh.envoy.rbac`) on
every chain that reaches the app: the HTTP RBAC filter on both HTTP chains (over mutual TLS the
caller is the URI SAN of its certificate; in plaintext it has none, so only rules without
``from`` admit it), the network RBAC filters on the TCP chains (a denied connection is closed).
The kubelet's probes pass whatever the policies say: under STRICT by the probe filter as
before, under PERMISSIVE by an extra allowing entry (:data:`PROBE_POLICY`) in the plaintext
HTTP chain's RBAC. A pod no policy selects gets no RBAC at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.access import AccessPolicy
from mesh.contract import TRUST_DOMAIN
from mesh.envoy import capture, rbac, tls
from mesh.envoy import http as envoy_http
from mesh.envoy.base import HTTP_RBAC, TLS_INSPECTOR, Json
from mesh.overrides.pod import PodOverrides
from mesh.overrides.values import MtlsMode

HTTP_ALPN = ("h2", "http/1.1")
PROBE_POLICY = "kubelet-probes"  # no AccessPolicy's counter name (they hold a "/") is this


@dataclass(frozen=True)
class InboundSecurity:
    """What of a pod its inbound listener's security depends on (part of its view key)."""

    mode: MtlsMode = "PERMISSIVE"
    probes: tuple[tuple[int, str], ...] = ()  # (port, path) the kubelet requests
    policies: tuple[AccessPolicy, ...] = ()  # the AccessPolicies selecting the pod, by name
    trust_domain: str = TRUST_DOMAIN  # of the callers' SPIFFE IDs the policies name


PERMISSIVE = InboundSecurity()  # a pod nothing asks more of


def _probe_policy(probes: tuple[tuple[int, str], ...]) -> Json:
    return {"permissions": [{"and_rules": {"rules": [
                {"destination_port": port}, {"url_path": {"path": {"exact": path}}}]}}
                for port, path in probes],
            "principals": [{"any": True}]}


def probe_filter(probes: tuple[tuple[int, str], ...]) -> Json:
    """An RBAC filter that lets in exactly the probes' requests (and nothing when there are
    none: an ALLOW filter without policies denies all)."""
    rules: Json = {"action": "ALLOW"}
    if probes:
        rules["policies"] = {PROBE_POLICY: _probe_policy(probes)}
    return {"name": "envoy.filters.http.rbac",
            "typed_config": {"@type": HTTP_RBAC, "rules_stat_prefix": "plaintext_",
                             "rules": rules}}


def _authorized_http(security: InboundSecurity, *, plaintext: bool) -> tuple[list[Json], Json]:
    """The policies' HTTP RBAC filters (in plaintext, with the probes allowed) and what they need
    of the connection manager, comparing the normalized path
    (:data:`mesh.envoy.rbac.HCM_PATH_OPTIONS`); nothing for a pod no policy selects."""
    found = rbac.http_filters(security.policies, trust_domain=security.trust_domain)
    if not found:
        return [], {}
    if plaintext and security.probes:
        found[-1]["typed_config"]["rules"]["policies"][PROBE_POLICY] = _probe_policy(
            security.probes)
    return found, rbac.HCM_PATH_OPTIONS


def _authorized_tcp(proxy: Json, security: InboundSecurity) -> list[Json]:
    """The policies' network RBAC, then ``proxy`` connecting to the app only once the first
    bytes passed it; just ``proxy`` for a pod no policy selects."""
    counting = rbac.network_filters(security.policies, trust_domain=security.trust_domain)
    if not counting:
        return [proxy]
    return [*counting, {**proxy, "typed_config": {**proxy["typed_config"],
                                                   **rbac.TCP_PROXY_OPTIONS}}]


def _mesh_chains(overrides: PodOverrides, security: InboundSecurity) -> list[Json]:
    first, options = _authorized_http(security, plaintext=False)
    http: Json = {
        "name": "inbound-mtls-http",
        "filter_chain_match": {**tls.mesh_chain_match(), "application_protocols": [*HTTP_ALPN]},
        "transport_socket": tls.downstream_socket(alpn=HTTP_ALPN),
        "filters": [envoy_http.http_connection_manager(
            overrides.traffic, direction="inbound", stat_prefix="inbound_mtls_http",
            first_filters=first, options=options, peer_identity=True)],
    }
    tcp: Json = {
        "name": "inbound-mtls-tcp",
        "filter_chain_match": tls.mesh_chain_match(),
        "transport_socket": tls.downstream_socket(),
        "filters": _authorized_tcp(capture.tcp_proxy(
            stat_prefix="inbound_mtls_tcp", cluster=capture.INBOUND_PASSTHROUGH), security),
    }
    return [http, tcp]


def inbound_listener(overrides: PodOverrides, security: InboundSecurity) -> Json:
    policy = overrides.traffic
    extras = capture.l7_extras(overrides, "inbound")
    tls_inspector = {"name": "envoy.filters.listener.tls_inspector",
                     "typed_config": {"@type": TLS_INSPECTOR}}
    if security.mode == "STRICT":
        passthrough = []
        plaintext = [envoy_http.http_filter_chain(
            policy, direction="inbound", first_filters=[probe_filter(security.probes)])
        ] if security.probes else []
    else:
        passthrough = _authorized_tcp(capture.tcp_proxy(
            stat_prefix="inbound", cluster=capture.INBOUND_PASSTHROUGH,
            access_log=envoy_http.access_log("inbound", tcp=True) if policy.access_log else None),
            security)
        first, options = _authorized_http(security, plaintext=True)
        plaintext = [envoy_http.http_filter_chain(
            policy, direction="inbound", first_filters=first, options=options)]
    return capture.capture_listener(
        name="inbound", port=overrides.capture.inbound_port, passthrough=passthrough,
        overrides=overrides, listener_filters=[tls_inspector, *extras["listener_filters"]],
        chains=[*_mesh_chains(overrides, security), *plaintext], options=extras["options"])
