"""Mutual TLS between proxies, as Envoy resources: the SDS secrets and the transport sockets.

Every proxy gets two secrets over SDS (on its ADS stream): :data:`SVID_SECRET`, its own
certificate and key, and :data:`TRUST_BUNDLE_SECRET`, the mesh roots. Both are referenced by
name, so a renewal or a root rotation is one secret update: Envoy uses it for new handshakes and
leaves open connections alone.

- Calling another proxy: TLS 1.3 with our SVID, verifying the peer's chain against the roots
  *and* its SPIFFE ID against the identities expected behind the Service (its endpoints' service
  accounts), with an SNI ending in :data:`MTLS_SNI_SUFFIX`.
- Being called: the server side requires a client certificate from the mesh roots. The inbound
  listener tells mesh traffic from everything else by that SNI suffix, so an app's own TLS
  (which a client outside the mesh may speak to it) still passes through untouched.

Pure: names and PEM in, dicts out.
"""

from __future__ import annotations

from collections.abc import Sequence

from mesh.contract import MTLS_SNI_SUFFIX, SVID_SECRET, TRUST_BUNDLE_SECRET
from mesh.envoy.base import ADS_SOURCE, DOWNSTREAM_TLS, UPSTREAM_TLS, Json

# the key an endpoint's metadata and a cluster's transport_socket_matches agree on
SOCKET_MATCH = "envoy.transport_socket_match"
MESH_ENDPOINT = {"tlsMode": "mesh"}
# both ends are ours: TLS 1.3 only (Envoy's client side stops at 1.2 unless told otherwise)
_TLS13: Json = {"tls_minimum_protocol_version": "TLSv1_3",
                "tls_maximum_protocol_version": "TLSv1_3"}


def sds(name: str) -> Json:
    return {"name": name, "sds_config": ADS_SOURCE}


def svid_secret(*, cert_chain: bytes, private_key: bytes) -> Json:
    """The proxy's own certificate (with its chain) and key."""
    return {"name": SVID_SECRET, "tls_certificate": {
        "certificate_chain": {"inline_string": cert_chain.decode()},
        "private_key": {"inline_string": private_key.decode()}}}


def bundle_secret(roots: bytes) -> Json:
    """The roots every proxy verifies its peers against (several while a root rotates)."""
    return {"name": TRUST_BUNDLE_SECRET,
            "validation_context": {"trusted_ca": {"inline_string": roots.decode()}}}


def sni(hostname: str, port: int) -> str:
    """What a client proxy asks for: readable in the server's logs, and marked as mesh traffic."""
    return f"{port}.{hostname}{MTLS_SNI_SUFFIX}"


def upstream_socket(*, sni_name: str, identities: Sequence[str]) -> Json:
    """The client side: our SVID, the peer verified against the roots and, when any are given,
    its SPIFFE ID against ``identities``. With identities the SDS roots and the SAN matchers go
    in a combined context; without, the SDS roots alone: Envoy refuses (NACKs) a combined
    context whose default half is missing."""
    context: Json = {"tls_params": _TLS13,
                     "tls_certificate_sds_secret_configs": [sds(SVID_SECRET)]}
    roots = sds(TRUST_BUNDLE_SECRET)
    if identities:
        context["combined_validation_context"] = {
            "validation_context_sds_secret_config": roots,
            "default_validation_context": {"match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": i}} for i in sorted(identities)]}}
    else:
        context["validation_context_sds_secret_config"] = roots
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": UPSTREAM_TLS, "sni": sni_name, "common_tls_context": context}}


def mesh_socket_matches(*, sni_name: str, identities: Sequence[str]) -> list[Json]:
    """A cluster's transport sockets by endpoint: mutual TLS to endpoints marked as in the
    mesh (:func:`mesh_endpoint_metadata`), plain TCP (the cluster's default) to the rest."""
    return [{"name": "mtls", "match": MESH_ENDPOINT,
             "transport_socket": upstream_socket(sni_name=sni_name, identities=identities)}]


def mesh_endpoint_metadata() -> Json:
    return {"filter_metadata": {SOCKET_MATCH: MESH_ENDPOINT}}


def downstream_socket(*, alpn: Sequence[str] = ()) -> Json:
    """The server side of mutual TLS: a client certificate from the mesh roots is required."""
    common: Json = {
        "tls_params": _TLS13,
        "tls_certificate_sds_secret_configs": [sds(SVID_SECRET)],
        "validation_context_sds_secret_config": sds(TRUST_BUNDLE_SECRET),
    }
    if alpn:
        common["alpn_protocols"] = list(alpn)
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": DOWNSTREAM_TLS, "require_client_certificate": True,
        "common_tls_context": common}}


def mesh_chain_match() -> Json:
    """The part of a filter chain match that says "mutual TLS from another proxy"."""
    return {"transport_protocol": "tls", "server_names": [f"*{MTLS_SNI_SUFFIX}"]}
