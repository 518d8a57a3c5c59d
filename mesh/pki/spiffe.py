"""SPIFFE IDs of mesh workloads: ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``.

The one place the shape is written: the CA puts it in each SVID's URI SAN, the RBAC filters
match callers by it (a service account exactly, a namespace by :func:`namespace_prefix`).
"""

from __future__ import annotations


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def namespace_prefix(trust_domain: str, namespace: str) -> str:
    """What every identity of ``namespace`` starts with; the trailing ``/sa/`` keeps ``shop``
    from matching ``shop-admin``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/"
