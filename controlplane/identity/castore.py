"""The mesh root in a cluster: one Secret, shared by every replica; its certificate published
to every namespace as the ``meshinject-ca-root`` ConfigMap the injected proxies mount.

The Secret is created by whichever replica starts first (its create wins, the others get 409 and
read it), so every replica serves a certificate from the same root. Publishing follows the
namespaces: a new namespace gets the ConfigMap within moments, an edited one is put back.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
from typing import Any

from controlplane.identity.ca import MeshCA
from mesh.contract import CA_CONFIGMAP, CA_FILE, SYSTEM_NAMESPACES
from mesh.errors import Conflict, KubeError, NotFound
from mesh.kube.client import Kube
from mesh.kube.watch import list_watch
from mesh.pki import certs

log = logging.getLogger("meshinject.ca")
ROOT_SECRET = "meshinject-ca"


def load_or_create(kube: Kube, *, namespace: str, trust_domain: str) -> MeshCA:
    path = f"/api/v1/namespaces/{namespace}/secrets"
    try:
        secret = kube.request("GET", f"{path}/{ROOT_SECRET}")
    except NotFound:
        ca = MeshCA.create(trust_domain=trust_domain)
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": ROOT_SECRET, "namespace": namespace},
                "data": {"ca.crt": base64.b64encode(ca.root.cert_pem).decode(),
                         "ca.key": base64.b64encode(ca.root.key_pem).decode()}}
        try:
            kube.request("POST", path, body=body)
            log.info("made the mesh root in secret %s/%s", namespace, ROOT_SECRET)
            return ca
        except Conflict:
            secret = kube.request("GET", f"{path}/{ROOT_SECRET}")
    data = secret.get("data") or {}
    return MeshCA(certs.CertPair(base64.b64decode(data.get("ca.crt", "")),
                                 base64.b64decode(data.get("ca.key", ""))))


def _configmap(namespace: str, bundle: bytes) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CA_CONFIGMAP, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "meshinject"}},
            "data": {CA_FILE: bundle.decode()}}


def publish(kube: Kube, namespace: str, bundle: bytes) -> None:
    """Create or correct the root ConfigMap in one namespace."""
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    try:
        found = kube.request("GET", f"{path}/{CA_CONFIGMAP}")
    except NotFound:
        with contextlib.suppress(Conflict):  # another replica was first: the same root
            kube.request("POST", path, body=_configmap(namespace, bundle))
        return
    if (found.get("data") or {}).get(CA_FILE) != bundle.decode():
        body = _configmap(namespace, bundle)
        body["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
        kube.request("PUT", f"{path}/{CA_CONFIGMAP}", body=body)


def keep_published(kube: Kube, bundle: bytes, stop: threading.Event) -> None:
    """Publish to every namespace, now and as namespaces come (blocking; run in a thread)."""
    def each(namespace: dict[str, Any]) -> None:
        meta = namespace.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name or name in SYSTEM_NAMESPACES or meta.get("deletionTimestamp"):
            return
        try:
            publish(kube, name, bundle)
        except KubeError as err:
            log.warning("cannot publish the mesh root to %s: %s", name, err)

    def on_list(items: list[dict[str, Any]]) -> None:
        for item in items:
            each(item)

    def on_event(kind: str, obj: dict[str, Any]) -> None:
        if kind != "DELETED":
            each(obj)

    list_watch(kube, "/api/v1/namespaces", stop=stop, on_list=on_list, on_event=on_event)
