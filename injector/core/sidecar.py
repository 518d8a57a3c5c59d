"""The two containers meshinject adds: ``mesh-init`` (capture rules) and ``mesh-proxy`` (Envoy).

Both are rendered whole from the mesh config and the pod's overrides, so the pod spec alone says
what runs: mesh-init's args are the CaptureConfig (the contract mesh-init parses back), and
mesh-proxy's args carry the entire bootstrap. Security contexts are as tight as each job allows:
mesh-init needs root with NET_ADMIN and NET_RAW for iptables and nothing else; the proxy runs as
1337 (the uid/gid mesh-init's rules exempt) with nothing at all, except in TPROXY mode, where
transparent sockets need NET_ADMIN (and so root, keeping gid 1337 for the exemption).
"""

from __future__ import annotations

from typing import Any

from initcontainer.config import to_args
from mesh.contract import (
    BOOTSTRAP_FILE,
    CA_CONFIGMAP,
    CA_DIR,
    CA_FILE,
    CA_VOLUME,
    INIT_COMMAND,
    INIT_NAME,
    POD_IP_ENV,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    PROMETHEUS_PORT,
    PROXY_COMMAND,
    PROXY_NAME,
    READINESS_PATH,
    READINESS_PORT,
    SERVICE_ACCOUNT_ENV,
    TOKEN_AUDIENCE,
    TOKEN_DIR,
    TOKEN_FILE,
    TOKEN_VOLUME,
)
from mesh.envoy import bootstrap, process
from mesh.overrides.pod import PodOverrides
from mesh.settings import MeshConfig, Resources


def resources(spec: Resources) -> dict[str, Any]:
    """Kubernetes resources from settings; an empty quantity leaves that entry out."""
    out: dict[str, Any] = {}
    requests = {k: v for k, v in (("cpu", spec.cpu), ("memory", spec.memory)) if v}
    limits = {k: v for k, v in (("cpu", spec.cpu_limit), ("memory", spec.memory_limit)) if v}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def init_container(*, config: MeshConfig, overrides: PodOverrides) -> dict[str, Any]:
    return {
        "name": INIT_NAME,
        "image": config.init.image,
        "command": [INIT_COMMAND],
        "args": to_args(overrides.capture),
        "resources": resources(config.init.resources),
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }


def _probe(*, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": READINESS_PATH, "port": READINESS_PORT},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _proxy_security(overrides: PodOverrides) -> dict[str, Any]:
    if overrides.capture.interception_mode == "TPROXY":
        return {
            "runAsUser": 0,
            "runAsGroup": overrides.capture.proxy_gid,
            "runAsNonRoot": False,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
        }
    return {
        "runAsUser": overrides.capture.proxy_uid,
        "runAsGroup": overrides.capture.proxy_gid,
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def proxy_container(*, config: MeshConfig, overrides: PodOverrides) -> dict[str, Any]:
    """The Envoy sidecar; ``overrides.native`` makes it a restartable init container (K8s
    1.29+)."""
    container: dict[str, Any] = {
        "name": PROXY_NAME,
        "image": overrides.image,
        "command": [PROXY_COMMAND],
        "args": [
            "--config-yaml", bootstrap.text(bootstrap.per_pod()),
            "--config-path", bootstrap.SHARED_PATH,
            "--disable-hot-restart",
            "--log-level", overrides.log_level,
            "--concurrency", str(overrides.concurrency),
            *process.proxy_args(overrides.traffic),
        ],
        "env": _downward_env(),
        "ports": [
            {"name": "http-envoy-prom", "containerPort": PROMETHEUS_PORT, "protocol": "TCP"},
            {"name": "mesh-health", "containerPort": READINESS_PORT, "protocol": "TCP"},
        ],
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": True},
        ],
        "resources": resources(overrides.resources),
        "securityContext": _proxy_security(overrides),
        # poll every second (Envoy is ready in well under one) but give a starved node two
        # minutes before the kubelet restarts the proxy
        "startupProbe": _probe(period=1, failures=120),
        "readinessProbe": _probe(period=5, failures=3),
    }
    # drain before the kubelet's SIGTERM, on which Envoy exits at once (see mesh.envoy.process)
    container["lifecycle"] = {
        "preStop": {"exec": {"command": process.prestop_command(overrides.traffic)}}
    }
    if overrides.native:
        container["restartPolicy"] = "Always"
    return container


def _downward_env() -> list[dict[str, Any]]:
    """The pod facts the bootstrap's node identity is expanded from (``$(VAR)`` in args)."""
    fields = ((POD_NAME_ENV, "metadata.name"), (POD_NAMESPACE_ENV, "metadata.namespace"),
              (POD_IP_ENV, "status.podIP"), (SERVICE_ACCOUNT_ENV, "spec.serviceAccountName"))
    return [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
            for name, path in fields]


def volumes(*, config: MeshConfig) -> list[dict[str, Any]]:
    """The proxy's credentials: a ServiceAccount token for our audience alone (useless to the
    API server, renewed by the kubelet) and the mesh's root, to verify the control plane."""
    token = {"serviceAccountToken": {"audience": TOKEN_AUDIENCE, "path": TOKEN_FILE,
                                     "expirationSeconds": config.control_plane.token_seconds}}
    return [
        {"name": TOKEN_VOLUME, "projected": {"sources": [token]}},
        {"name": CA_VOLUME, "configMap": {"name": CA_CONFIGMAP, "items": [
            {"key": CA_FILE, "path": CA_FILE}, {"key": BOOTSTRAP_FILE, "path": BOOTSTRAP_FILE}]}},
    ]
