"""What the control plane says of each proxy: connected, which config it runs, whether it
ACKed the latest, and any config it refused (NACK), with Envoy's reason.

Every replica knows the proxies connected to it (``/debug/proxies``); this module asks each
replica's pod through the API server's pod proxy and puts the answers together, so ``inspect``
needs no port-forward. A replica that does not answer is reported, not fatal.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.contract import (
    CONTROLPLANE_APP_LABEL,
    CONTROLPLANE_DEBUG_PORT,
    INJECTOR_NAMESPACE,
    PROXY_CONFIG_TYPES,
)
from mesh.errors import KubeError
from mesh.kube.client import Kube

Key = tuple[str, str]


@dataclass(frozen=True)
class ProxySync:
    """One proxy as its control plane replica reports it."""

    replica: str
    status: Mapping[str, Any]

    @property
    def types(self) -> Mapping[str, Any]:
        found: Mapping[str, Any] = self.status.get("types") or {}
        return found

    @property
    def nacks(self) -> list[str]:
        return [f"{kind} version {t['nack']['version']}: {t['nack']['message']}"
                for kind, t in sorted(self.types.items()) if t.get("nack")]

    @property
    def state(self) -> str:
        """NACK, synced (the four config types and any other it asked for, its secrets, each
        ACKed at its latest version) or syncing."""
        if self.nacks:
            return "NACK"
        if self.status.get("problem"):
            return "NO CONFIG"
        kinds = self.types
        every = set(PROXY_CONFIG_TYPES) <= set(kinds)
        return "synced" if every and all(t.get("current") for t in kinds.values()) else "syncing"

    @property
    def mtls(self) -> str:
        return str(self.status.get("mtls") or "-")

    @property
    def identity(self) -> str:
        return str(self.status.get("identity") or "")

    @property
    def certificate(self) -> str:
        """When the proxy's certificate expires and is renewed (UTC), or why it has none."""
        cert = self.status.get("certificate") or {}
        if not cert.get("expires"):
            return f"NONE: {cert.get('problem') or 'not issued yet'}"
        return (f"expires {_utc(float(cert['expires']))}, renewed "
                f"{_utc(float(cert.get('renews') or 0))}")

    @property
    def version(self) -> str:
        """A short name for the config the proxy runs: a hash of the versions it ACKed."""
        acked = "".join(f"{k}={t.get('acked', '')};" for k, t in sorted(self.types.items()))
        return hashlib.sha256(acked.encode()).hexdigest()[:8] if acked else "-"


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def replicas(kube: Kube, *, namespace: str = INJECTOR_NAMESPACE) -> list[str]:
    pods = kube.list_pods(namespace)
    key, value = CONTROLPLANE_APP_LABEL
    return sorted(p["metadata"]["name"] for p in pods
                  if (p["metadata"].get("labels") or {}).get(key) == value)


def proxies(kube: Kube, *, namespace: str = INJECTOR_NAMESPACE
            ) -> tuple[dict[Key, ProxySync], list[str]]:
    """Every connected proxy by (namespace, pod), and a line per replica that did not answer."""
    found: dict[Key, ProxySync] = {}
    problems: list[str] = []
    for replica in replicas(kube, namespace=namespace):
        try:
            text = kube.pod_proxy_get(namespace, replica, port=CONTROLPLANE_DEBUG_PORT,
                                      path="debug/proxies")
            listed = json.loads(text)
        except (KubeError, ValueError) as err:
            problems.append(f"control plane {replica}: no answer ({err})")
            continue
        for status in listed if isinstance(listed, list) else []:
            found[(str(status.get("namespace")), str(status.get("pod")))] = ProxySync(
                replica, status)
    return found, problems


def config_of(kube: Kube, *, namespace: str, pod: str,
              replica_namespace: str = INJECTOR_NAMESPACE) -> dict[str, Any]:
    """The resources a pod's proxy is given, from any replica (they all compute the same)."""
    errors = []
    for replica in replicas(kube, namespace=replica_namespace):
        try:
            text = kube.pod_proxy_query(replica_namespace, replica, port=CONTROLPLANE_DEBUG_PORT,
                                        path="debug/config",
                                        query={"namespace": namespace, "pod": pod})
            data: dict[str, Any] = json.loads(text)
            return data
        except (KubeError, ValueError) as err:
            errors.append(f"{replica}: {err}")
    raise KubeError("no control plane replica answered: " + ("; ".join(errors) or
                                                             "none is running"))
