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


def _rule(rule: Obj) -> Obj:
    return policy_obj("bad", {"allow": [rule]})


# Malformed policies: (what, object, a fragment of the API server's refusal, who refuses it
# offline). "schema": the CRD's OpenAPI schema (a JSON-schema validator refuses it too); "cel":
# one of its x-kubernetes-validations rules, "set": list type set, "unknown": strict field
# validation; those three only the API server (and mesh.access.parse_policy) can check.
MALFORMED: list[tuple[str, Obj, str, str]] = [
    ("no spec", policy_obj("bad"), "spec: Required value", "schema"),
    ("lower-case mtls", policy_obj("bad", {"mtls": "strict"}),
     'spec.mtls: Unsupported value: "strict"', "schema"),
    ("allow not a list", policy_obj("bad", {"allow": {"from": {}}}),
     "spec.allow", "schema"),  # strict decoding names spec.allow.from before the schema runs
    ("account without namespace", _rule({"from": {"serviceAccounts": ["frontend"]}}),
     "spec.allow[0].from.serviceAccounts[0]: Invalid value", "schema"),
    ("port zero", _rule({"to": {"ports": [0]}}),
     "spec.allow[0].to.ports[0]: Invalid value: 0", "schema"),
    ("port too big", _rule({"to": {"ports": [70000]}}),
     "spec.allow[0].to.ports[0]: Invalid value: 70000", "schema"),
    ("port as a string", _rule({"to": {"ports": ["80"]}}),
     "spec.allow[0].to.ports[0]: Invalid value: \"string\"", "schema"),
    ("lower-case method", _rule({"to": {"methods": ["get"]}}),
     "spec.allow[0].to.methods[0]: Invalid value: \"get\"", "schema"),
    ("relative path", _rule({"to": {"paths": ["api/*"]}}),
     "spec.allow[0].to.paths[0]: Invalid value: \"api/*\"", "schema"),
    ("star inside a path", _rule({"to": {"paths": ["/a*/b"]}}),
     "spec.allow[0].to.paths[0]: Invalid value: \"/a*/b\"", "schema"),
    ("empty service account list", _rule({"from": {"serviceAccounts": []}}),
     "spec.allow[0].from.serviceAccounts: Invalid value: 0", "schema"),
    ("bad operator", policy_obj("bad", {"selector": {"matchExpressions": [
        {"key": "app", "operator": "in", "values": ["web"]}]}}),
     "spec.selector.matchExpressions[0].operator: Unsupported value: \"in\"", "schema"),
    ("empty from", _rule({"from": {}}), "names no caller", "cel"),
    ("empty to", _rule({"to": {}}), "names nothing", "cel"),
    ("In without values", policy_obj("bad", {"selector": {"matchExpressions": [
        {"key": "app", "operator": "In"}]}}), "In and NotIn need values", "cel"),
    ("Exists with values", policy_obj("bad", {"selector": {"matchExpressions": [
        {"key": "app", "operator": "Exists", "values": ["x"]}]}}),
     "Exists and DoesNotExist take none", "cel"),
    ("path with a query", _rule({"to": {"paths": ["/a?b=1"]}}),
     "paths are compared without the query string", "cel"),
    ("dot segments", _rule({"to": {"paths": ["/a/../b"]}}),
     "requests are compared after normalization", "cel"),
    ("double slash", _rule({"to": {"paths": ["//a"]}}),
     "requests are compared after normalization", "cel"),
    ("escaped slash", _rule({"to": {"paths": ["/a%2Fb"]}}),
     "requests are compared after normalization", "cel"),
    ("escaped letter", _rule({"to": {"paths": ["/%61dmin"]}}),
     "requests are compared after normalization", "cel"),
    ("port twice", _rule({"to": {"ports": [80, 80]}}),
     "spec.allow[0].to.ports[1]: Duplicate value: 80", "set"),
    ("typo for from", _rule({"form": {"namespaces": ["ops"]}}),
     'unknown field "spec.allow[0].form"', "unknown"),
]
