"""selects / applicable, the mTLS mode's precedence, decide for every rule shape, and the path
normalization (its table measured on Envoy 1.40 with the inbound HCM's path options)."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.access import (
    AccessPolicy,
    applicable,
    decide,
    explain,
    mtls_choice,
    mtls_mode,
    normalize,
    parse_policy,
    selects,
)
from mesh.contract import MTLS_MODE
from mesh.overrides.values import MtlsMode


def policy(name: str = "web", *, namespace: str = "shop", **spec: Any) -> AccessPolicy:
    return parse_policy({"metadata": {"name": name, "namespace": namespace}, "spec": spec})


WEB = {"matchLabels": {"app": "web"}}


@pytest.mark.parametrize(("selector", "labels", "want"), [
    ({}, {}, True),
    (WEB, {"app": "web", "x": "y"}, True),
    (WEB, {"app": "api"}, False),
    (WEB, {}, False),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
     {"app": "api"}, True),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, {}, False),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, {}, True),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]},
     {"app": "web"}, False),
    ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {"app": ""}, True),
    ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {}, True),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {"app": "x"}, False),
    ({**WEB, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"app": "web"},
     False),
])
def test_a_policy_selects_pods_of_its_namespace_by_its_label_selector(
    selector: dict[str, Any], labels: dict[str, str], want: bool
) -> None:
    found = policy(selector=selector)
    assert selects(found, namespace="shop", labels=labels) is want
    assert selects(found, namespace="other", labels=labels) is False


def test_applicable_policies_are_those_selecting_the_pod_sorted_by_name() -> None:
    everything = [policy("zeta"), policy("alpha", selector=WEB), policy("mid"),
                  policy("api", selector={"matchLabels": {"app": "api"}}),
                  policy("alpha", namespace="other")]
    found = applicable(everything, namespace="shop", labels={"app": "web"})
    assert [p.key for p in found] == ["shop/alpha", "shop/mid", "shop/zeta"]
    assert applicable([], namespace="shop", labels={}) == ()


STRICT_POLICY, PERMISSIVE_POLICY = policy("s", mtls="STRICT"), policy("p", mtls="PERMISSIVE")
STRICT_LABEL, PERMISSIVE_LABEL = {MTLS_MODE: "strict"}, {MTLS_MODE: "Permissive"}


@pytest.mark.parametrize(("pod", "policies", "labels", "want", "source"), [
    (None, [], {}, "PERMISSIVE", "default"),
    (None, [], STRICT_LABEL, "STRICT", "namespace label"),
    (None, [], PERMISSIVE_LABEL, "PERMISSIVE", "namespace label"),
    (None, [policy("plain")], STRICT_LABEL, "STRICT", "namespace label"),
    (None, [STRICT_POLICY], {}, "STRICT", "policy"),
    (None, [PERMISSIVE_POLICY], STRICT_LABEL, "PERMISSIVE", "policy"),
    (None, [PERMISSIVE_POLICY, STRICT_POLICY], PERMISSIVE_LABEL, "STRICT", "policy"),
    ("PERMISSIVE", [STRICT_POLICY], STRICT_LABEL, "PERMISSIVE", "pod annotation"),
    ("STRICT", [PERMISSIVE_POLICY], PERMISSIVE_LABEL, "STRICT", "pod annotation"),
])
def test_the_mtls_mode_is_pod_then_policies_then_namespace_then_permissive(
    pod: MtlsMode | None, policies: list[AccessPolicy], labels: dict[str, str], want: str,
    source: str
) -> None:
    assert mtls_mode(pod=pod, policies=policies, namespace_labels=labels) == want
    choice = mtls_choice(pod=pod, policies=policies, namespace_labels=labels)
    assert (choice.mode, choice.source, choice.problem) == (want, source, None)


def test_the_policy_source_names_every_policy_saying_strict() -> None:
    choice = mtls_choice(pod=None, policies=[policy("a", mtls="STRICT"), STRICT_POLICY,
                                             PERMISSIVE_POLICY], namespace_labels={})
    assert choice.detail == "AccessPolicy shop/a, shop/s says STRICT"


def test_a_bad_namespace_label_is_ignored_and_reported_as_a_problem() -> None:
    choice = mtls_choice(pod=None, policies=[], namespace_labels={MTLS_MODE: "strcit"})
    assert (choice.mode, choice.source) == ("PERMISSIVE", "default")
    assert choice.problem == (f'namespace label {MTLS_MODE}="strcit" is invalid: expected '
                              '"strict" or "permissive"; it is ignored')
    # a policy still decides over it, and then there is nothing to report
    assert mtls_choice(pod=None, policies=[STRICT_POLICY],
                       namespace_labels={MTLS_MODE: "x"}).problem is None


FRONTEND, OTHER, OPS = ("shop", "frontend"), ("shop", "other"), ("ops", "ci")
ALLOW_FRONTEND = policy("frontend-only", allow=[{"from": {"serviceAccounts": ["shop/frontend"]}}])
PORTS = policy("ports", allow=[{"to": {"ports": [8080, 9090]}}])
OPS_NS = policy("ops", allow=[{"from": {"namespaces": ["ops"]}}])
READ = policy("read", allow=[{"to": {"methods": ["GET", "HEAD"]}}])
API = policy("api", allow=[{"to": {"paths": ["/api/*", "/healthz"]}}])
EVERYTHING = policy("open", allow=[{}])
DENY_ALL = policy("deny")
COMBINED = policy("combined", allow=[
    {"from": {"serviceAccounts": ["shop/frontend"], "namespaces": ["ops"]},
     "to": {"ports": [8080], "methods": ["POST"], "paths": ["/orders"]}},
    {"from": {"namespaces": ["ops"]}, "to": {"ports": [9090]}},
])

Req = tuple[tuple[str, str] | None, int, str | None, str | None]
HTTP_GET: Req = (FRONTEND, 8080, "GET", "/")
CASES: list[tuple[str, list[AccessPolicy], MtlsMode, Req, str | None]] = [
    # (what, policies, mode, (caller, port, method, path), allowing policy or "" for denied)
    ("no policy: any caller", [], "PERMISSIVE", (None, 80, None, None), None),
    ("no policy: mesh caller under STRICT", [], "STRICT", (OTHER, 80, None, None), None),
    ("deny-all policy", [DENY_ALL], "PERMISSIVE", HTTP_GET, ""),
    ("empty rule allows plaintext", [EVERYTHING], "PERMISSIVE", (None, 1, None, None),
     "shop/open"),
    ("service account allowed", [ALLOW_FRONTEND], "PERMISSIVE", HTTP_GET, "shop/frontend-only"),
    ("service account over TCP", [ALLOW_FRONTEND], "PERMISSIVE", (FRONTEND, 5432, None, None),
     "shop/frontend-only"),
    ("other service account", [ALLOW_FRONTEND], "PERMISSIVE", (OTHER, 8080, "GET", "/"), ""),
    ("same name, other namespace", [ALLOW_FRONTEND], "PERMISSIVE",
     (("ops", "frontend"), 8080, "GET", "/"), ""),
    ("plaintext against from", [ALLOW_FRONTEND], "PERMISSIVE", (None, 8080, "GET", "/"), ""),
    ("namespace allowed", [OPS_NS], "PERMISSIVE", (OPS, 1, None, None), "shop/ops"),
    ("namespace is not a prefix", [OPS_NS], "PERMISSIVE", (("ops-admin", "ci"), 1, None, None),
     ""),
    ("listed port", [PORTS], "PERMISSIVE", (None, 9090, None, None), "shop/ports"),
    ("other port", [PORTS], "PERMISSIVE", (FRONTEND, 8081, "GET", "/"), ""),
    ("listed method", [READ], "PERMISSIVE", (OTHER, 80, "HEAD", "/x"), "shop/read"),
    ("other method", [READ], "PERMISSIVE", (OTHER, 80, "POST", "/x"), ""),
    ("methods need HTTP", [READ], "PERMISSIVE", (OTHER, 80, None, None), ""),
    ("exact path", [API], "PERMISSIVE", (OTHER, 80, "GET", "/healthz"), "shop/api"),
    ("exact path with a query", [API], "PERMISSIVE", (OTHER, 80, "GET", "/healthz?v=1"),
     "shop/api"),
    ("exact path, longer", [API], "PERMISSIVE", (OTHER, 80, "GET", "/healthz/x"), ""),
    ("prefix", [API], "PERMISSIVE", (OTHER, 80, "GET", "/api/orders/1"), "shop/api"),
    ("prefix: its own directory", [API], "PERMISSIVE", (OTHER, 80, "GET", "/api/"), "shop/api"),
    ("prefix: not the bare name", [API], "PERMISSIVE", (OTHER, 80, "GET", "/api"), ""),
    ("prefix escaped by ..", [API], "PERMISSIVE", (OTHER, 80, "GET", "/api/../admin"), ""),
    ("prefix reached by ..", [API], "PERMISSIVE", (OTHER, 80, "GET", "/x/../api/1"), "shop/api"),
    ("prefix escaped by %2F", [API], "PERMISSIVE", (OTHER, 80, "GET", "/api/..%2Fadmin"), ""),
    ("paths need HTTP", [API], "PERMISSIVE", (OTHER, 80, None, None), ""),
    ("combined: all match", [COMBINED], "PERMISSIVE", (FRONTEND, 8080, "POST", "/orders"),
     "shop/combined"),
    ("combined: namespace caller", [COMBINED], "PERMISSIVE", (OPS, 8080, "POST", "/orders"),
     "shop/combined"),
    ("combined: wrong method", [COMBINED], "PERMISSIVE", (FRONTEND, 8080, "GET", "/orders"), ""),
    ("combined: wrong port", [COMBINED], "PERMISSIVE", (FRONTEND, 9090, "POST", "/orders"), ""),
    ("combined: second rule", [COMBINED], "PERMISSIVE", (OPS, 9090, None, None),
     "shop/combined"),
    ("combined: TCP to the HTTP rule", [COMBINED], "PERMISSIVE", (FRONTEND, 8080, None, None),
     ""),
    ("union: second policy allows", [ALLOW_FRONTEND, OPS_NS], "PERMISSIVE",
     (OPS, 1, None, None), "shop/ops"),
    ("union: a deny-all beside adds nothing", [DENY_ALL, PORTS], "PERMISSIVE",
     (None, 8080, None, None), "shop/ports"),
    ("union: first by name credited", [PORTS, EVERYTHING, ALLOW_FRONTEND], "PERMISSIVE",
     (FRONTEND, 8080, None, None), "shop/frontend-only"),
    ("STRICT refuses plaintext first", [EVERYTHING], "STRICT", (None, 8080, "GET", "/"), ""),
    ("STRICT, no policy: plaintext refused", [], "STRICT", (None, 8080, None, None), ""),
    ("STRICT lets mesh callers reach policies", [ALLOW_FRONTEND], "STRICT", HTTP_GET,
     "shop/frontend-only"),
]


@pytest.mark.parametrize(("policies", "mode", "req", "want"),
                         [(p, m, r, w) for _, p, m, r, w in CASES], ids=[c[0] for c in CASES])
def test_decide_allows_exactly_what_a_rule_of_a_selecting_policy_allows(
    policies: list[AccessPolicy], mode: MtlsMode, req: Req, want: str | None
) -> None:
    caller, port, method, path = req
    decision = decide(policies, mode=mode, caller=caller, port=port, method=method, path=path)
    assert decision.allowed is (want != ""), decision.reason
    assert decision.policy == (want or None)
    if want:
        assert decision.reason.startswith(f"allowed by AccessPolicy {want} (spec.allow[")


def test_the_reasons_say_what_decided_in_a_sentence() -> None:
    strict = decide([], mode="STRICT", caller=None, port=80, method=None, path=None)
    assert strict.reason == ("refused before authorization: the pod's mTLS mode is STRICT, so "
                             "its proxy accepts only mesh mTLS and this connection is plaintext")
    none = decide([], mode="PERMISSIVE", caller=None, port=80, method=None, path=None)
    assert none.reason == ("allowed: no AccessPolicy selects this pod, so it accepts every "
                           "caller")
    denied = decide([PORTS, DENY_ALL], mode="PERMISSIVE", caller=OTHER, port=81, method="GET",
                    path="/a/../b")
    assert denied.reason == ("denied: caller shop/other, port 81, GET /b; AccessPolicy "
                             "shop/deny, shop/ports select this pod and no rule allows it")
    tcp = decide([READ], mode="PERMISSIVE", caller=None, port=81, method=None, path=None)
    assert tcp.reason.startswith("denied: a plaintext caller, port 81, a TCP connection; "
                                 "AccessPolicy shop/read selects")
    second = decide([COMBINED], mode="PERMISSIVE", caller=OPS, port=9090, method=None,
                    path=None)
    assert second.reason == "allowed by AccessPolicy shop/combined (spec.allow[1])"


def test_explain_says_per_rule_why_it_does_or_does_not_allow() -> None:
    lines = explain([COMBINED, DENY_ALL, ALLOW_FRONTEND], caller=OTHER, port=8080,
                    method="GET", path="/orders")
    assert lines == [
        "shop/combined spec.allow[0]: does not allow it: caller shop/other is not one of "
        "from: shop/frontend, namespace ops",
        "shop/combined spec.allow[1]: does not allow it: caller shop/other is not one of "
        "from: namespace ops",
        "shop/deny: allows nothing (spec.allow is empty)",
        "shop/frontend-only spec.allow[0]: does not allow it: caller shop/other is not one of "
        "from: shop/frontend",
    ]
    assert explain([COMBINED], caller=OPS, port=9090, method="GET", path="/") == [
        "shop/combined spec.allow[0]: does not allow it: port 9090 is not one of to.ports: 8080",
        "shop/combined spec.allow[1]: allows it",
    ]
    assert explain([READ, API, ALLOW_FRONTEND], caller=None, port=1, method="POST",
                   path="/api") == [
        "shop/api spec.allow[0]: does not allow it: path /api matches none of to.paths: "
        "/api/*, /healthz",
        "shop/frontend-only spec.allow[0]: does not allow it: from names mesh callers, and a "
        "plaintext caller has no identity",
        "shop/read spec.allow[0]: does not allow it: method POST is not one of to.methods: "
        "GET, HEAD",
    ]
    assert explain([API], caller=None, port=1, method=None, path=None) == [
        "shop/api spec.allow[0]: does not allow it: it names methods or paths, which a TCP "
        "connection does not have"]


# what Envoy 1.40 forwarded to the app for each request path, with HCM_PATH_OPTIONS (measured
# with an upstream that echoes the path it received; tests/dataplane/test_access_envoy.py
# checks a sample of them against a running Envoy again)
ENVOY_PATHS = [
    ("/a/./b", "/a/b"), ("/a/../b", "/b"), ("//a//b", "/a/b"), ("/a/b/..", "/a/"),
    ("/../a", "/a"), ("/a%2Fb", "/a/b"), ("/a%2fb", "/a/b"), ("/a%5Cb", "/a/b"),
    ("/a\\b", "/a/b"), ("/%61dmin", "/admin"), ("/a/%2E%2E/b", "/b"), ("/a/b?x=/../c", "/a/b"),
    ("/a;b", "/a;b"), ("/A%7e", "/A~"), ("/a/b/", "/a/b/"), ("/a%252Fb", "/a%252Fb"),
    ("/a/.%2e/b", "/b"), ("/public/..%2Fadmin", "/admin"), ("/public/%2E%2E%2Fadmin", "/admin"),
    ("/a%2F%2Fb", "/a/b"), ("/a/%2e%2e%2f..%2fb", "/b"), ("/a%2F..%2Fb", "/b"),
    ("/a%3bb", "/a%3bb"), ("/a%20b", "/a%20b"), ("/%7Ex", "/~x"), ("/a%e2%82%acb",
                                                                    "/a%e2%82%acb"),
    ("/a%2", "/a%2"), ("/a%zz", "/a%zz"), ("/a%41", "/aA"), ("/a%2d%5f", "/a-_"),
    ("/a%25b", "/a%25b"), ("/a/b/.", "/a/b/"), ("/a/b/%2e", "/a/b/"), ("/a/...", "/a/..."),
    ("/.a", "/.a"), ("/a/.../b", "/a/.../b"), ("/a/.%2E", "/"), ("/a%2fb/../c", "/a/c"),
    ("/a%5c..%5cb", "/b"), ("/a%2F", "/a/"), ("/a//../b", "/a/b"), ("/a/.//b", "/a/b"),
    ("//../a", "/a"), ("/a/b//..//c", "/a/b/c"), ("/..", "/"), ("/.", "/"), ("/a/..", "/"),
    ("/a%2F%2E%2E/b", "/b"), ("/a/%2E%2e%2Fb", "/b"), ("/a/b%2F%2E%2E%2F%2E%2E/c", "/c"),
]


@pytest.mark.parametrize(("sent", "seen"), ENVOY_PATHS, ids=[s for s, _ in ENVOY_PATHS])
def test_paths_are_normalized_as_the_inbound_proxy_normalizes_them(sent: str, seen: str
                                                                   ) -> None:
    assert normalize(sent) == seen
