"""ES256 JSON Web Tokens: minted by the sandbox, verified by the control plane.

In a cluster the API server issues ServiceAccount tokens and the control plane asks it to
review them (TokenReview). The local sandbox has no API server, so it signs tokens with the same
claims itself and the control plane verifies them with the sandbox's public key: one code path
from "a token" to "a pod and its service account" either way. Only ES256, only what that needs.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from mesh.errors import MeshError

_HEADER = {"alg": "ES256", "typ": "JWT"}


class TokenError(MeshError):
    """A token that is malformed, badly signed, expired or for someone else."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    """A signed token carrying ``claims``."""
    signing_input = f"{_b64(orjson.dumps(_HEADER))}.{_b64(orjson.dumps(dict(claims)))}"
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def verify(token: str, key: ec.EllipticCurvePublicKey, *, audience: str,
           now: float | None = None) -> dict[str, Any]:
    """The claims of a token signed by ``key`` for ``audience`` and valid now."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("not a JWT (expected three dot-separated parts)")
    try:
        header = orjson.loads(_unb64(parts[0]))
        claims = orjson.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (ValueError, orjson.JSONDecodeError) as err:
        raise TokenError(f"not a JWT: {err}") from err
    if not isinstance(header, dict) or header.get("alg") != "ES256":
        raise TokenError("only ES256 tokens are accepted")
    if len(signature) != 64 or not isinstance(claims, dict):
        raise TokenError("malformed signature or claims")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as err:
        raise TokenError("bad signature") from err
    moment = time.time() if now is None else now
    if not isinstance(claims.get("exp"), int | float) or claims["exp"] <= moment:
        raise TokenError("expired")
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else audiences or []
    if audience not in audiences:
        raise TokenError(f"not for audience {audience!r}")
    return claims
