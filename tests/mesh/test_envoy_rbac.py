"""The RBAC filters: their shape (golden files) and Envoy's own verdict (validate mode)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from mesh.envoy import rbac
from mesh.envoy.base import HTTP_CONNECTION_MANAGER, ROUTER, TCP_PROXY
from tests.support.accesspolicies import DENY_ALL, EXAMPLES, FRONTEND_ONLY, OPEN, WEB_API, load
from tests.support.envoy import validate

TD = "example.org"
SETS = {
    "frontend-only": [FRONTEND_ONLY],
    "mixed": [WEB_API, FRONTEND_ONLY, DENY_ALL],
    "deny-all": [DENY_ALL],
    "open": [OPEN],
}


def filters(name: str) -> dict[str, Any]:
    policies = load(*SETS[name])
    return {"http": rbac.http_filters(policies, trust_domain=TD),
            "tcp": rbac.network_filters(policies, trust_domain=TD)}


@pytest.mark.parametrize("name", sorted(SETS))
def test_the_rbac_filters_match_their_golden(name: str, golden: Callable[[str, str], None]
                                             ) -> None:
    text = json.dumps(filters(name), indent=1, sort_keys=True) + "\n"
    golden(f"mesh/envoy_rbac/{name}.json", text)


def test_no_policy_means_no_filter_at_all() -> None:
    assert rbac.http_filters([], trust_domain=TD) == []
    assert rbac.network_filters([], trust_domain=TD) == []


def test_a_deny_all_policy_leaves_an_engine_with_no_policy_which_denies_everything() -> None:
    http = rbac.http_filters(load(DENY_ALL), trust_domain=TD)[-1]
    assert http["typed_config"]["rules"] == {"action": "ALLOW", "policies": {}}


def test_rules_are_grouped_by_port_list_and_tcp_keeps_only_rules_without_http_parts() -> None:
    web = load(WEB_API)[0]
    http = rbac.envoy_policies(web, trust_domain=TD, tcp=False)
    assert list(http) == ["shop/web_api", "shop/web_api#1"]
    assert http["shop/web_api"]["permissions"] == [{"destination_port": 8080}]
    assert len(http["shop/web_api"]["principals"]) == 2  # rule 0 and rule 2
    assert rbac.envoy_policies(web, trust_domain=TD, tcp=True) == {
        "shop/web_api": {"permissions": [{"destination_port": 9090}], "principals": [
            {"authenticated": {"principal_name": {"prefix": "spiffe://example.org/ns/ops/sa/"}}}
        ]}}


def test_callers_are_matched_by_their_spiffe_id() -> None:
    http = rbac.http_filters(load(FRONTEND_ONLY), trust_domain=TD)[-1]
    principal = http["typed_config"]["rules"]["policies"]["shop/frontend-only"]["principals"]
    assert principal == [{"authenticated": {"principal_name": {
        "exact": "spiffe://example.org/ns/shop/sa/frontend"}}}]


def _bootstrap(http: list[Any], tcp: list[Any]) -> dict[str, Any]:
    hcm = {"@type": HTTP_CONNECTION_MANAGER, "stat_prefix": "inbound_http",
           **rbac.HCM_PATH_OPTIONS,
           "http_filters": [*http, {"name": "envoy.filters.http.router",
                                   "typed_config": {"@type": ROUTER}}],
           "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]}}
    proxy = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": TCP_PROXY, "stat_prefix": "inbound", "cluster": "app",
        **rbac.TCP_PROXY_OPTIONS}}

    def listener(name: str, port: int, chain: list[Any]) -> dict[str, Any]:
        return {"name": name, "address": {"socket_address": {"address": "127.0.0.1",
                                                             "port_value": port}},
                "filter_chains": [{"filters": chain}]}

    return {"static_resources": {
        "listeners": [listener("http", 1, [{"name": "hcm", "typed_config": hcm}]),
                      listener("tcp", 2, [*tcp, proxy])],
        "clusters": [{"name": "app", "type": "STATIC",
                      "load_assignment": {"cluster_name": "app", "endpoints": []}}]}}


@pytest.mark.envoy
@pytest.mark.parametrize("name", sorted(SETS))
def test_envoy_accepts_the_filters_on_an_inbound_http_and_tcp_chain(name: str) -> None:
    found = filters(name)
    result = validate(_bootstrap(found["http"], found["tcp"]))
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_example_has_a_golden_or_a_test() -> None:
    used = {id(o) for objs in SETS.values() for o in objs}
    assert {id(o) for o in EXAMPLES.values()} <= used
