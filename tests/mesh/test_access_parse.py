"""parse_policy: every rule shape it accepts, as values, and every refusal, all at once."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.access import (
    AccessPolicy,
    Callers,
    Requirement,
    Rule,
    Selector,
    Targets,
    parse_policy,
)
from mesh.errors import PolicyError


def obj(spec: Any = None, *, name: Any = "web", namespace: Any = "shop", **top: Any
        ) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "security.meshinject.io/v1alpha1",
                           "kind": "AccessPolicy",
                           "metadata": {"name": name, "namespace": namespace}, **top}
    if spec is not None:
        out["spec"] = spec
    return out


GOOD: list[tuple[str, dict[str, Any], AccessPolicy]] = [
    ("empty spec: every pod, nothing allowed", obj({}), AccessPolicy("shop", "web")),
    ("empty allow", obj({"allow": []}), AccessPolicy("shop", "web")),
    ("an empty rule allows everything", obj({"allow": [{}]}),
     AccessPolicy("shop", "web", allow=(Rule(),))),
    ("mtls alone", obj({"mtls": "STRICT"}), AccessPolicy("shop", "web", mtls="STRICT")),
    ("matchLabels", obj({"selector": {"matchLabels": {"app": "web", "tier": "front"}}}),
     AccessPolicy("shop", "web", Selector((("app", "web"), ("tier", "front"))))),
    ("every operator", obj({"selector": {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["web", "api"]},
        {"key": "example.com/track", "operator": "NotIn", "values": ["canary"]},
        {"key": "tier", "operator": "Exists"},
        {"key": "legacy", "operator": "DoesNotExist", "values": []}]}}),
     AccessPolicy("shop", "web", Selector(match_expressions=(
         Requirement("app", "In", ("web", "api")),
         Requirement("example.com/track", "NotIn", ("canary",)),
         Requirement("tier", "Exists"), Requirement("legacy", "DoesNotExist"))))),
    ("service accounts", obj({"allow": [{"from": {"serviceAccounts": ["shop/frontend",
                                                                        "ops/ci.runner"]}}]}),
     AccessPolicy("shop", "web", allow=(Rule(Callers((("shop", "frontend"),
                                                        ("ops", "ci.runner")))),))),
    ("namespaces", obj({"allow": [{"from": {"namespaces": ["monitoring"]}}]}),
     AccessPolicy("shop", "web", allow=(Rule(Callers(namespaces=("monitoring",))),))),
    ("ports", obj({"allow": [{"to": {"ports": [8080, 9090]}}]}),
     AccessPolicy("shop", "web", allow=(Rule(to=Targets(ports=(8080, 9090))),))),
    ("methods and paths", obj({"allow": [{"to": {"methods": ["GET", "M-SEARCH"],
                                                  "paths": ["/", "/api/*", "/a/.well*"]}}]}),
     AccessPolicy("shop", "web", allow=(Rule(to=Targets(
         methods=("GET", "M-SEARCH"), paths=("/", "/api/*", "/a/.well*"))),))),
    ("the whole shape", obj({
        "selector": {"matchLabels": {"app": "web"}}, "mtls": "PERMISSIVE",
        "allow": [{"from": {"serviceAccounts": ["shop/frontend"], "namespaces": ["ops"]},
                   "to": {"ports": [8080], "methods": ["GET"], "paths": ["/x"]}},
                  {"to": {"ports": [15021]}}]}),
     AccessPolicy("shop", "web", Selector((("app", "web"),)), "PERMISSIVE", (
         Rule(Callers((("shop", "frontend"),), ("ops",)),
              Targets((8080,), ("GET",), ("/x",))),
         Rule(to=Targets(ports=(15021,)))))),
    ("as the API server returns it", obj({"allow": []}, status={}) | {
        "metadata": {"name": "web", "namespace": "shop", "uid": "1", "resourceVersion": "7",
                     "generation": 1, "managedFields": []}}, AccessPolicy("shop", "web")),
]


@pytest.mark.parametrize(("obj_", "want"), [(o, w) for _, o, w in GOOD],
                         ids=[name for name, _, _ in GOOD])
def test_a_valid_policy_parses_to_frozen_values(obj_: dict[str, Any], want: AccessPolicy
                                                ) -> None:
    got = parse_policy(obj_)
    assert got == want
    assert hash(got) == hash(parse_policy(obj_))  # a cache key


def test_the_key_and_counter_name_name_the_policy() -> None:
    policy = parse_policy(obj({}, name="web.v2"))
    assert policy.key == "shop/web.v2" and policy.counter_name == "shop/web_v2"


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("wrong kind", obj({}, kind="Policy"), 'kind="Policy": expected AccessPolicy'),
    ("wrong group", obj({}, apiVersion="v1"), 'apiVersion="v1": expected '
     "security.meshinject.io/v1alpha1"),
    ("no name", obj({}, name=None), "metadata.name=null: expected a string"),
    ("bad name", obj({}, name="Web_1"), 'metadata.name="Web_1": expected a Kubernetes object name'),
    ("bad namespace", obj({}, namespace="a.b"), 'metadata.namespace="a.b": expected a namespace'),
    ("spec not an object", obj([]), "spec=[]: expected an object"),
    ("no spec", obj(), "spec=null: required (spec: {} protects every pod"),
    ("unknown spec field", obj({"allows": []}), 'spec.allows=[]: unknown field (expected '
     "selector, mtls, allow)"),
    ("lower-case mtls", obj({"mtls": "strict"}), 'spec.mtls="strict": expected STRICT or '
     "PERMISSIVE"),
    ("selector not an object", obj({"selector": "app=web"}), 'spec.selector="app=web": '
     "expected an object"),
    ("unknown selector field", obj({"selector": {"labels": {}}}), "spec.selector.labels={}: "
     "unknown field"),
    ("bad label value", obj({"selector": {"matchLabels": {"app": "a b"}}}),
     'spec.selector.matchLabels.app="a b": expected a label value'),
    ("non-string label value", obj({"selector": {"matchLabels": {"app": 1}}}),
     "spec.selector.matchLabels.app=1: expected a string"),
    ("bad label key", obj({"selector": {"matchLabels": {"-app": "web"}}}),
     'spec.selector.matchLabels.-app="web": the key is not a valid label key'),
    ("bad operator", obj({"selector": {"matchExpressions": [{"key": "a", "operator": "in"}]}}),
     'spec.selector.matchExpressions[0].operator="in": expected one of In, NotIn, Exists, '
     "DoesNotExist"),
    ("In without values", obj({"selector": {"matchExpressions": [{"key": "a", "operator":
                                                                  "In"}]}}),
     "spec.selector.matchExpressions[0].values=null: In needs at least one value"),
    ("NotIn with no values", obj({"selector": {"matchExpressions": [
        {"key": "a", "operator": "NotIn", "values": []}]}}),
     "spec.selector.matchExpressions[0].values=[]: expected at least one entry"),
    ("Exists with values", obj({"selector": {"matchExpressions": [
        {"key": "a", "operator": "Exists", "values": ["x"]}]}}),
     'spec.selector.matchExpressions[0].values=["x"]: Exists takes no values'),
    ("expression without key", obj({"selector": {"matchExpressions": [
        {"operator": "Exists"}]}}), "spec.selector.matchExpressions[0].key=null: expected a "
     "label key"),
    ("allow not a list", obj({"allow": {"from": {}}}), 'spec.allow={"from": {}}: expected a '
     "list"),
    ("rule not an object", obj({"allow": ["all"]}), 'spec.allow[0]="all": expected an object'),
    ("typo for from", obj({"allow": [{"form": {"namespaces": ["a"]}}]}),
     'spec.allow[0].form={"namespaces": ["a"]}: unknown field (expected from, to)'),
    ("empty from", obj({"allow": [{"from": {}}]}), "spec.allow[0].from={}: names no caller"),
    ("unknown from field", obj({"allow": [{"from": {"principals": ["a"]}}]}),
     'spec.allow[0].from.principals=["a"]: unknown field (expected serviceAccounts, '
     "namespaces)"),
    ("account without namespace", obj({"allow": [{"from": {"serviceAccounts": ["shop"]}}]}),
     'spec.allow[0].from.serviceAccounts[0]="shop": expected namespace/name'),
    ("account with a bad name", obj({"allow": [{"from": {"serviceAccounts": ["shop/A"]}}]}),
     'spec.allow[0].from.serviceAccounts[0]="shop/A": expected namespace/name'),
    ("account not a string", obj({"allow": [{"from": {"serviceAccounts": [{"ns": "a"}]}}]}),
     'spec.allow[0].from.serviceAccounts[0]={"ns": "a"}: expected a string namespace/name'),
    ("empty account list", obj({"allow": [{"from": {"serviceAccounts": []}}]}),
     "spec.allow[0].from.serviceAccounts=[]: expected at least one entry"),
    ("account listed twice", obj({"allow": [{"from": {"serviceAccounts": ["a/b", "a/b"]}}]}),
     'spec.allow[0].from.serviceAccounts[1]="a/b": listed twice'),
    ("bad namespace name", obj({"allow": [{"from": {"namespaces": ["Shop"]}}]}),
     'spec.allow[0].from.namespaces[0]="Shop": expected a namespace name'),
    ("namespaces not a list", obj({"allow": [{"from": {"namespaces": "shop"}}]}),
     'spec.allow[0].from.namespaces="shop": expected a list'),
    ("empty to", obj({"allow": [{"to": {}}]}), "spec.allow[0].to={}: names nothing"),
    ("unknown to field", obj({"allow": [{"to": {"hosts": ["a"]}}]}),
     'spec.allow[0].to.hosts=["a"]: unknown field (expected ports, methods, paths)'),
    ("port zero", obj({"allow": [{"to": {"ports": [0]}}]}),
     "spec.allow[0].to.ports[0]=0: expected a port number from 1 to 65535"),
    ("port too big", obj({"allow": [{"to": {"ports": [65536]}}]}),
     "spec.allow[0].to.ports[0]=65536: expected a port number"),
    ("port as a string", obj({"allow": [{"to": {"ports": ["80"]}}]}),
     'spec.allow[0].to.ports[0]="80": expected a port number'),
    ("port as a boolean", obj({"allow": [{"to": {"ports": [True]}}]}),
     "spec.allow[0].to.ports[0]=true: expected a port number"),
    ("port listed twice", obj({"allow": [{"to": {"ports": [80, 80]}}]}),
     "spec.allow[0].to.ports[1]=80: listed twice"),
    ("lower-case method", obj({"allow": [{"to": {"methods": ["get"]}}]}),
     'spec.allow[0].to.methods[0]="get": expected an upper-case HTTP method'),
    ("path without slash", obj({"allow": [{"to": {"paths": ["api"]}}]}),
     'spec.allow[0].to.paths[0]="api": expected a path starting with "/"'),
    ("path with a space", obj({"allow": [{"to": {"paths": ["/a b"]}}]}),
     'spec.allow[0].to.paths[0]="/a b": expected a path starting with "/"'),
    ("star inside a path", obj({"allow": [{"to": {"paths": ["/a*/b"]}}]}),
     'spec.allow[0].to.paths[0]="/a*/b": a "*" may only end a path'),
    ("path with a query", obj({"allow": [{"to": {"paths": ["/a?b=1"]}}]}),
     'spec.allow[0].to.paths[0]="/a?b=1": paths are compared without the query string'),
    ("dot segments", obj({"allow": [{"to": {"paths": ["/a/../b"]}}]}),
     'spec.allow[0].to.paths[0]="/a/../b": requests are compared after normalization'),
    ("double slash prefix", obj({"allow": [{"to": {"paths": ["//a/*"]}}]}),
     "write /a/*"),
    ("escaped slash", obj({"allow": [{"to": {"paths": ["/a%2Fb"]}}]}), "write /a/b"),
    ("escaped letter", obj({"allow": [{"to": {"paths": ["/%61dmin"]}}]}), "write /admin"),
    ("backslash", obj({"allow": [{"to": {"paths": ["/a\\b"]}}]}), "write /a/b"),
]


@pytest.mark.parametrize(("obj_", "problem"), [(o, p) for _, o, p in BAD],
                         ids=[name for name, _, _ in BAD])
def test_a_bad_field_is_named_with_its_value(obj_: dict[str, Any], problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(obj_)
    assert any(problem in p for p in caught.value.problems), caught.value.problems
    assert len(caught.value.problems) == 1, caught.value.problems


def test_every_problem_is_reported_at_once_each_naming_its_field() -> None:
    bad = obj({"mtls": "on", "selector": {"matchLabels": {"app": "a b"}}, "allow": [
        {"from": {"serviceAccounts": ["shop/frontend", "shop"]}, "to": {"ports": [0]}},
        {"form": {}}, {"to": {"methods": ["get"], "paths": ["x"]}}]}, name="Web")
    with pytest.raises(PolicyError) as caught:
        parse_policy(bad)
    fields = [p.split("=", 1)[0] for p in caught.value.problems]
    assert fields == [
        "metadata.name", "spec.selector.matchLabels.app", "spec.mtls",
        "spec.allow[0].from.serviceAccounts[1]", "spec.allow[0].to.ports[0]",
        "spec.allow[1].form", "spec.allow[2].to.methods[0]", "spec.allow[2].to.paths[0]",
    ]
    assert str(caught.value).startswith("AccessPolicy shop/Web: metadata.name=\"Web\"")
    assert caught.value.name == "shop/Web"


def test_something_that_is_not_an_object_at_all_is_refused() -> None:
    with pytest.raises(PolicyError, match="expected an object"):
        parse_policy([])  # type: ignore[arg-type]
