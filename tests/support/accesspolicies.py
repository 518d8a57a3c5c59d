"""Example AccessPolicies the tests share, as the API server would return them (plain JSON),
plus every policy example the docs show, read from docs/security.md.

Each is parsed by ``mesh.access.parse_policy`` and validated against the CRD's schema
(tests/injector/cluster/test_accesspolicy_schema.py), so an example can never drift from what
the cluster accepts.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from mesh.access import AccessPolicy, parse_policy
from tests.support.paths import REPO

Obj = dict[str, Any]
DOCS = REPO / "docs" / "security.md"


def policy_obj(name: str, spec: Obj | None = None, *, namespace: str = "shop") -> Obj:
    out: Obj = {"apiVersion": "security.meshinject.io/v1alpha1", "kind": "AccessPolicy",
                "metadata": {"name": name, "namespace": namespace}}
    if spec is not None:
        out["spec"] = spec
    return out


FRONTEND_ONLY = policy_obj("frontend-only", {
    "selector": {"matchLabels": {"app": "web"}},
    "allow": [{"from": {"serviceAccounts": ["shop/frontend"]}}]})
# three rules over two port lists: two Envoy policies, the second named web.api#1
WEB_API = policy_obj("web.api", {
    "selector": {"matchLabels": {"app": "web"}},
    "mtls": "STRICT",
    "allow": [
        {"from": {"serviceAccounts": ["shop/frontend", "shop/mobile"]},
         "to": {"ports": [8080], "methods": ["GET", "HEAD"], "paths": ["/api/*", "/version"]}},
        {"from": {"namespaces": ["ops"]}, "to": {"ports": [9090]}},
        {"to": {"ports": [8080], "paths": ["/healthz"]}},
    ]})
OPEN = policy_obj("open", {"selector": {"matchLabels": {"app": "web"}}, "allow": [{}]})
DENY_ALL = policy_obj("deny-all", {"selector": {"matchExpressions": [
    {"key": "app", "operator": "In", "values": ["batch", "reports"]}]}, "allow": []})
EXAMPLES = {"frontend-only": FRONTEND_ONLY, "web.api": WEB_API, "open": OPEN,
            "deny-all": DENY_ALL}


def load(*objs: Obj) -> list[AccessPolicy]:
    return [parse_policy(o) for o in objs]


def docs_examples() -> list[Obj]:
    """Every AccessPolicy in a ```yaml block of docs/security.md (other documents skipped)."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)
    found = [d for block in blocks for d in yaml.safe_load_all(block)
             if isinstance(d, dict) and d.get("kind") == "AccessPolicy"]
    assert found, f"{DOCS} shows no AccessPolicy"
    return found
