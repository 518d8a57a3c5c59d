"""Proxy authentication: a bearer token in, an :class:`Identity` out, or :class:`AuthError`.

Every proxy sends its pod's projected ServiceAccount token (audience :data:`AUDIENCE`, mounted
by the injector) on its xDS stream. A token says which pod and service account it was issued
for; the stream is then bound to exactly that pod, and the node metadata the proxy claims must
agree with it. Two verifiers: the API server's TokenReview (``tokenreview.py``) and, for the
sandbox, a signature check with the sandbox's own key (:class:`KeyAuthenticator`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from mesh.contract import TOKEN_AUDIENCE
from mesh.errors import MeshError
from mesh.pki import jwt, spiffe

AUDIENCE = TOKEN_AUDIENCE  # the projected token's audience: ours alone, useless to the API server
# the claims Kubernetes puts in a bound ServiceAccount token
_K8S = "kubernetes.io"


class AuthError(MeshError):
    """A proxy could not prove who it is; the message says why (never the token)."""


@dataclass(frozen=True)
class Identity:
    namespace: str
    service_account: str
    pod_name: str = ""
    pod_uid: str = ""

    def spiffe_id(self, trust_domain: str) -> str:
        return spiffe.spiffe_id(trust_domain, self.namespace, self.service_account)


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Identity: ...


def identity_from_claims(claims: Mapping[str, Any]) -> Identity:
    """The pod and service account of a bound ServiceAccount token's claims."""
    sub = str(claims.get("sub", ""))
    prefix = "system:serviceaccount:"
    if not sub.startswith(prefix) or sub.count(":") != 3:
        raise AuthError(f"token subject {sub!r} is not a service account")
    namespace, service_account = sub[len(prefix):].split(":")
    bound = claims.get(_K8S)
    pod = bound.get("pod") if isinstance(bound, dict) else None
    if not isinstance(pod, dict) or not pod.get("name"):
        raise AuthError("token is not bound to a pod")
    return Identity(namespace, service_account, str(pod["name"]), str(pod.get("uid", "")))


class KeyAuthenticator:
    """Verifies tokens signed by one known key (the sandbox's), with Kubernetes' claims."""

    def __init__(self, public_key: ec.EllipticCurvePublicKey, *, audience: str = AUDIENCE):
        self.public_key = public_key
        self.audience = audience

    async def authenticate(self, token: str) -> Identity:
        try:
            claims = jwt.verify(token, self.public_key, audience=self.audience, now=time.time())
        except jwt.TokenError as err:
            raise AuthError(f"token refused: {err}") from err
        return identity_from_claims(claims)
