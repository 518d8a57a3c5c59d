"""The proxies' Envoy bootstrap: only what must work before the control plane answers.

Everything else (the capture listeners, the Services' clusters and routes, endpoints, the L7
policy) comes over xDS. The bootstrap comes in two parts, which Envoy merges
(``--config-yaml`` over ``--config-path``):

- :func:`per_pod`, in the proxy's args: the node's identity and nothing else, so the injected
  container stays about 2 KB and ``meshinject inject`` output readable;
- :func:`shared`, the same for every proxy of the mesh: the file ``bootstrap.json`` in the
  ``meshinject-ca-root`` ConfigMap beside the root certificate, which the control plane
  publishes to every namespace and the proxy mounts already (no second ConfigMap a pod's start
  would wait for).

Together they hold:

- the node's identity, written with ``$(VAR)`` references the kubelet expands from the proxy's
  downward-API environment (a pod's name is not known at admission, only when it is created);
- the admin API on 127.0.0.1, and the readiness and Prometheus listeners routed to it, so probes
  and scrapes work from the first second; readiness is Envoy's own ``/ready``, which stays 503
  until the first config arrived (the ADS fetch waits forever: ``initial_fetch_timeout: 0s``),
  so an app never starts behind a proxy that has no routes;
- the ADS connection: gRPC over TLS verified against the mesh's root, with the pod's projected
  ServiceAccount token as its bearer credential, read again on every reconnect.
"""

from __future__ import annotations

from typing import Any

import orjson

from mesh.contract import (
    ADMIN_PORT,
    BOOTSTRAP_FILE,
    CA_DIR,
    CA_FILE,
    POD_IP_ENV,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    PROMETHEUS_PATH,
    PROMETHEUS_PORT,
    READINESS_PATH,
    READINESS_PORT,
    SERVICE_ACCOUNT_ENV,
    TOKEN_DIR,
    TOKEN_FILE,
)
from mesh.envoy.base import DOWNSTREAM_CONNECTIONS, Json, socket_address
from mesh.envoy.capture import admin_cluster, admin_paths_listener
from mesh.settings import MeshConfig

MAX_DOWNSTREAM_CONNECTIONS = 50_000
_FILE_METADATA = "envoy.grpc_credentials.file_based_metadata"
_ADS: Json = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}


def _var(name: str) -> str:
    return f"$({name})"


def node() -> Json:
    """Who the proxy says it is; the control plane believes it only where the token agrees."""
    pod, namespace = _var(POD_NAME_ENV), _var(POD_NAMESPACE_ENV)
    return {
        "id": f"{pod}.{namespace}",
        "cluster": f"{_var(SERVICE_ACCOUNT_ENV)}.{namespace}",
        "metadata": {"namespace": namespace, "pod": pod, "ip": _var(POD_IP_ENV),
                     "serviceAccount": _var(SERVICE_ACCOUNT_ENV)},
    }


def ads(config: MeshConfig) -> Json:
    """The one gRPC stream every dynamic resource comes over."""
    credentials = {"from_plugin": {"name": _FILE_METADATA, "typed_config": {
        "@type": "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig",
        "secret_data": {"filename": f"{TOKEN_DIR}/{TOKEN_FILE}"},
        "header_key": "authorization",
        "header_prefix": "Bearer ",
    }}}
    return {
        "ads_config": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": True,
            "grpc_services": [{"google_grpc": {
                "target_uri": config.control_plane.address,
                "stat_prefix": "xds",
                "channel_credentials": {"ssl_credentials": {
                    "root_certs": {"filename": f"{CA_DIR}/{CA_FILE}"}}},
                "credentials_factory_name": _FILE_METADATA,
                "call_credentials": [credentials],
            }}],
        },
        "cds_config": _ADS,
        "lds_config": _ADS,
    }


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


SHARED_PATH = f"{CA_DIR}/{BOOTSTRAP_FILE}"  # where the proxy finds :func:`shared`


def shared(config: MeshConfig) -> dict[str, Any]:
    """The part every proxy of the mesh runs alike: admin, readiness and Prometheus, the ADS
    connection (it depends on the mesh config's control plane address alone)."""
    return {
        "admin": {"address": socket_address("127.0.0.1", ADMIN_PORT)},
        "overload_manager": overload_manager(),
        "dynamic_resources": ads(config),
        "static_resources": {
            # readiness (the kubelet) and Prometheus (scrapers), on both ports: one listener
            "listeners": [admin_paths_listener(
                name="proxy", ports=(READINESS_PORT, PROMETHEUS_PORT),
                paths={READINESS_PATH: "/ready", PROMETHEUS_PATH: PROMETHEUS_PATH})],
            "clusters": [admin_cluster()],
        },
    }


def per_pod() -> dict[str, Any]:
    """The part in one pod's args: who the proxy is (the pod's own settings reach it over
    xDS)."""
    return {"node": node()}


def merged(config: MeshConfig) -> dict[str, Any]:
    """What the proxy runs: both parts, as Envoy merges them (they share no field)."""
    return {**shared(config), **per_pod()}


def text(config: dict[str, Any]) -> str:
    """Compact JSON (which is YAML for ``--config-yaml``); sorted keys, so equal in, equal
    out."""
    return orjson.dumps(config, option=orjson.OPT_SORT_KEYS).decode()
