"""One pod's Envoy bootstrap: the capture listeners and clusters of :mod:`mesh.envoy`, the admin
API on 127.0.0.1, and the readiness and Prometheus listeners, rendered from its overrides.

The whole configuration is static and travels in the mesh-proxy's args, so the pod spec alone
says what its proxy does.
"""

from __future__ import annotations

from typing import Any

import orjson

from mesh.contract import (
    ADMIN_PORT,
    PROMETHEUS_PATH,
    PROMETHEUS_PORT,
    READINESS_PATH,
    READINESS_PORT,
)
from mesh.envoy import http as envoy_http
from mesh.envoy.base import DOWNSTREAM_CONNECTIONS, Json, socket_address
from mesh.envoy.capture import admin_route_listener, clusters, direction_listener, l7_extras
from mesh.overrides.pod import PodOverrides
from mesh.settings import MeshConfig

MAX_DOWNSTREAM_CONNECTIONS = 50_000


def overload_manager() -> Json:
    """A ceiling on downstream connections: far above what one pod's app sees, but it keeps a
    connection flood from eating the pod's memory (and Envoy warns at start-up without one)."""
    return {"resource_monitors": [{
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {
            "@type": DOWNSTREAM_CONNECTIONS,
            "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
        },
    }]}


def bootstrap(*, config: MeshConfig, overrides: PodOverrides) -> dict[str, Any]:
    """The whole static bootstrap for one pod's proxy."""
    del config  # mesh-wide defaults reach it through overrides.traffic
    return {
        "admin": {"address": socket_address("127.0.0.1", ADMIN_PORT)},
        "overload_manager": overload_manager(),
        "static_resources": {
            "listeners": [
                direction_listener("outbound", overrides=overrides,
                                   **l7_extras(overrides, "outbound")),
                direction_listener("inbound", overrides=overrides,
                                   **l7_extras(overrides, "inbound")),
                admin_route_listener(name="readiness", port=READINESS_PORT,
                                     path=READINESS_PATH, admin_path="/ready"),
                admin_route_listener(name="prometheus", port=PROMETHEUS_PORT,
                                     path=PROMETHEUS_PATH, admin_path=PROMETHEUS_PATH),
            ],
            "clusters": [*clusters(), *envoy_http.clusters(overrides.traffic)],
        },
    }


def bootstrap_text(config: dict[str, Any]) -> str:
    """Compact JSON (which is YAML) for ``--config-yaml``; sorted keys, so equal in, equal out."""
    return orjson.dumps(config, option=orjson.OPT_SORT_KEYS).decode()
