"""Proxy tokens verified by the API server (TokenReview), then checked against the pod.

The API server says whether the token is valid for our audience and which service account and
pod it was issued for. Then the pod must exist with that uid and run as that service account: a
token copied out of a deleted pod, or out of another service account's pod, is refused. The API
server's answer is cached per token for a minute (a reconnect storm must not become a
TokenReview storm); the pod is checked every time.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

from controlplane.identity.authn import AUDIENCE, AuthError, Identity
from mesh.errors import KubeError, NotFound
from mesh.kube.client import Kube

CACHE_SECONDS = 60.0
_POD_NAME = "authentication.kubernetes.io/pod-name"
_POD_UID = "authentication.kubernetes.io/pod-uid"


def _one(extra: dict[str, Any], key: str) -> str:
    values = extra.get(key) or []
    return str(values[0]) if values else ""


class TokenReviewAuthenticator:
    def __init__(self, kube: Kube, *, audience: str = AUDIENCE,
                 pod_lookup: Callable[[str, str], dict[str, Any] | None] | None = None) -> None:
        self.kube = kube
        self.audience = audience
        self.pod_lookup = pod_lookup or self.fetch_pod
        self._cache: dict[bytes, tuple[float, Identity]] = {}

    def fetch_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod from the API server, or None when it does not exist."""
        try:
            return self.kube.get_pod(namespace, name)
        except NotFound:
            return None

    def review(self, token: str) -> Identity:
        """Blocking: what the API server says the token is (not yet checked against the pod)."""
        if not token:
            raise AuthError("no bearer token")
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self.audience]}}
        try:
            answer = self.kube.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                                       body=body)
        except KubeError as err:
            raise AuthError(f"cannot review the token: {err}") from err
        status = answer.get("status") or {}
        if not status.get("authenticated"):
            raise AuthError(f"token refused by the API server: {status.get('error') or 'invalid'}")
        if self.audience not in (status.get("audiences") or []):
            raise AuthError(f"token is not for audience {self.audience!r}")
        user = status.get("user") or {}
        name = str(user.get("username") or "")
        prefix = "system:serviceaccount:"
        if not name.startswith(prefix) or name.count(":") != 3:
            raise AuthError(f"{name!r} is not a service account")
        namespace, account = name[len(prefix):].split(":")
        extra = user.get("extra") or {}
        pod_name, pod_uid = _one(extra, _POD_NAME), _one(extra, _POD_UID)
        if not pod_name:
            raise AuthError("token is not bound to a pod")
        return Identity(namespace, account, pod_name, pod_uid)

    def check_pod(self, identity: Identity) -> None:
        """The pod the token names exists, is that pod (uid) and runs as that account."""
        namespace, pod_name, pod_uid = identity.namespace, identity.pod_name, identity.pod_uid
        account = identity.service_account
        pod = self.pod_lookup(namespace, pod_name)
        if pod is None:
            raise AuthError(f"pod {namespace}/{pod_name} does not exist")
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        if pod_uid and meta.get("uid") != pod_uid:
            raise AuthError(f"pod {namespace}/{pod_name} is not the pod the token was made for")
        if (spec.get("serviceAccountName") or "default") != account:
            raise AuthError(f"pod {namespace}/{pod_name} does not run as {account}")

    async def authenticate(self, token: str) -> Identity:
        digest = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            identity = hit[1]
        else:
            identity = await asyncio.to_thread(self.review, token)
            if len(self._cache) > 10_000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[digest] = (now + CACHE_SECONDS, identity)
        await asyncio.to_thread(self.check_pod, identity)
        return identity
