"""The mesh root in a cluster: one Secret, shared by every replica; its certificate published
to every namespace as the ``meshinject-ca-root`` ConfigMap the injected proxies mount, beside
the bootstrap every proxy shares (``mesh.envoy.bootstrap.shared``).

The Secret is created by whichever replica starts first (its create wins, the others get 409 and
read it), so every replica serves a certificate from the same root. Publishing follows the
namespaces: a new namespace gets the ConfigMap within moments, an edited one is put back.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from controlplane.identity.ca import MeshCA
from mesh.contract import BOOTSTRAP_FILE, CA_CONFIGMAP, CA_FILE, SYSTEM_NAMESPACES
from mesh.errors import Conflict, KubeError, NotFound, SettingsError
from mesh.kube.client import Kube
from mesh.kube.watch import list_watch

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
                "data": {k: base64.b64encode(v).decode() for k, v in ca.files().items()}}
        try:
            kube.request("POST", path, body=body)
            log.info("made the mesh root in secret %s/%s", namespace, ROOT_SECRET)
            return ca
        except Conflict:
            secret = kube.request("GET", f"{path}/{ROOT_SECRET}")
    return from_secret(secret)


def from_secret(secret: dict[str, Any]) -> MeshCA:
    """The CA a Secret holds (our layout or cert-manager's)."""
    meta = secret.get("metadata") or {}
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    return MeshCA.from_files(data, where=f"secret {meta.get('namespace')}/{meta.get('name')}")


def contents(bundle: bytes, bootstrap: str) -> dict[str, str]:
    """What the root ConfigMap holds: the trust bundle and the proxies' shared bootstrap."""
    return {CA_FILE: bundle.decode(), BOOTSTRAP_FILE: bootstrap}


def _configmap(namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CA_CONFIGMAP, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "meshinject"}},
            "data": data}


def publish(kube: Kube, namespace: str, data: dict[str, str]) -> None:
    """Create or correct the root ConfigMap in one namespace (``data`` from :func:`contents`)."""
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    try:
        found = kube.request("GET", f"{path}/{CA_CONFIGMAP}")
    except NotFound:
        with contextlib.suppress(Conflict):  # another replica was first: the same root
            kube.request("POST", path, body=_configmap(namespace, data))
        return
    if (found.get("data") or {}) != data:
        body = _configmap(namespace, data)
        body["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
        kube.request("PUT", f"{path}/{CA_CONFIGMAP}", body=body)


def keep_published(kube: Kube, data: Callable[[], dict[str, str]], stop: threading.Event
                   ) -> None:
    """Publish the current ``data()`` to every namespace, now and as namespaces come
    (blocking; run in a thread). A rotation or a new bootstrap calls :func:`publish_all` for
    the ones there."""
    def each(namespace: dict[str, Any]) -> None:
        meta = namespace.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name or name in SYSTEM_NAMESPACES or meta.get("deletionTimestamp"):
            return
        try:
            publish(kube, name, data())
        except KubeError as err:
            log.warning("cannot publish the mesh root to %s: %s", name, err)

    def on_list(items: list[dict[str, Any]]) -> None:
        for item in items:
            each(item)

    def on_event(kind: str, obj: dict[str, Any]) -> None:
        if kind != "DELETED":
            each(obj)

    list_watch(kube, "/api/v1/namespaces", stop=stop, on_list=on_list, on_event=on_event)


def publish_all(kube: Kube, data: dict[str, str]) -> None:
    """Publish ``data`` to every namespace now (blocking)."""
    listed = kube.request("GET", "/api/v1/namespaces")
    for item in listed.get("items") or []:
        meta = item.get("metadata") or {}
        name = str(meta.get("name") or "")
        if name and name not in SYSTEM_NAMESPACES and not meta.get("deletionTimestamp"):
            try:
                publish(kube, name, data)
            except KubeError as err:
                log.warning("cannot publish the mesh root to %s: %s", name, err)


def watch_secret(kube: Kube, *, namespace: str, on_change: Callable[[MeshCA], None],
                 stop: threading.Event) -> None:
    """Call ``on_change`` with the CA whenever the Secret changes to one that can be used (a
    user plugging in their own signer, or rotating the root); blocking, run in a thread."""
    def seen(secret: dict[str, Any]) -> None:
        try:
            on_change(from_secret(secret))
        except SettingsError as err:
            log.error("the mesh CA secret changed to one that cannot be used; keeping the "
                      "current CA: %s", err)

    def on_list(items: list[dict[str, Any]]) -> None:
        for item in items:
            seen(item)

    def on_event(kind: str, obj: dict[str, Any]) -> None:
        if kind != "DELETED":
            seen(obj)

    list_watch(kube, f"/api/v1/namespaces/{namespace}/secrets", stop=stop,
               query={"fieldSelector": f"metadata.name={ROOT_SECRET}"},
               on_list=on_list, on_event=on_event)
