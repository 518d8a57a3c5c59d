"""AccessPolicies in a pod's inbound listener: RBAC on every chain that reaches the app of a
pod they select, none for a pod they do not; probes pass under STRICT and under policies; the
mTLS mode's precedence; and Envoy itself accepts every combination (validate mode)."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.cache.snapshot import Resource
from controlplane.grpc.convert import Converter
from controlplane.model.values import Namespace, Service, ServicePort, Workload
from controlplane.translate.inbound import PROBE_POLICY, InboundSecurity
from controlplane.translate.proxy import LISTENER, translate, view_key
from mesh import contract
from mesh.envoy import rbac
from mesh.overrides.pod import parse_overrides
from mesh.settings import MeshConfig
from tests.support.accesspolicies import FRONTEND_ONLY, OPEN, WEB_API, load, policy_obj
from tests.support.envoy import as_static, validate

CONFIG = MeshConfig()
WEB = Service("shop", "web", "198.19.0.10", (ServicePort(80, "http"),))
PROBES = ((8080, "/healthz"),)
POLICIES = tuple(load(FRONTEND_ONLY))
Json = dict[str, Any]


def inbound(security: InboundSecurity) -> Json:
    found = translate([WEB], overrides=parse_overrides({}, config=CONFIG),
                      security=security).by_type()
    listener: Json = found[LISTENER]["inbound"]
    return listener


def chains(security: InboundSecurity) -> dict[str, Json]:
    listener = inbound(security)
    out = {c["name"]: c for c in listener["filter_chains"]}
    if "default_filter_chain" in listener:
        out["default"] = listener["default_filter_chain"]
    return out


def http_filters(chain: Json) -> list[Json]:
    found: list[Json] = chain["filters"][0]["typed_config"]["http_filters"]
    return found


def names(filters: list[Json]) -> list[str]:
    return [f["name"] for f in filters]


def test_an_unselected_pod_gets_no_rbac_at_all() -> None:
    text = repr(inbound(InboundSecurity("PERMISSIVE", PROBES)))
    assert rbac.RBAC_HTTP not in text and rbac.RBAC_NETWORK not in text


def test_a_selected_permissive_pod_gets_rbac_on_every_chain_to_the_app() -> None:
    found = chains(InboundSecurity("PERMISSIVE", PROBES, POLICIES))
    for http in ("inbound-mtls-http", "inbound_http"):
        filters = http_filters(found[http])  # the policy's counting filter, then the enforcing
        assert filters[0]["typed_config"]["shadow_rules_stat_prefix"] == "shop/frontend-only."
        assert filters[1]["typed_config"]["rules_stat_prefix"] == "accesspolicy."
        assert "shop/frontend-only" in filters[1]["typed_config"]["rules"]["policies"]
        hcm = found[http]["filters"][0]["typed_config"]
        assert all(hcm[k] == v for k, v in rbac.HCM_PATH_OPTIONS.items())
    # the probes pass in plaintext whatever the policies say; over mTLS nobody needs them
    plain = http_filters(found["inbound_http"])[1]["typed_config"]["rules"]["policies"]
    assert plain[PROBE_POLICY]["permissions"] == [{"and_rules": {"rules": [
        {"destination_port": 8080}, {"url_path": {"path": {"exact": "/healthz"}}}]}}]
    mtls = http_filters(found["inbound-mtls-http"])[1]["typed_config"]["rules"]["policies"]
    assert PROBE_POLICY not in mtls
    for tcp in ("inbound-mtls-tcp", "default"):
        filters = found[tcp]["filters"]
        assert names(filters) == ["envoy.filters.network.rbac"] * 2 + [
            "envoy.filters.network.tcp_proxy"]
        assert filters[-1]["typed_config"]["upstream_connect_mode"] == "ON_DOWNSTREAM_DATA"


def test_a_selected_strict_pod_keeps_only_its_probes_in_plaintext() -> None:
    found = chains(InboundSecurity("STRICT", PROBES, POLICIES))
    assert set(found) == {"inbound-loop-guard", "inbound-mtls-http", "inbound-mtls-tcp",
                          "inbound_http"}
    probe = http_filters(found["inbound_http"])
    assert len(probe) >= 2 and probe[0]["typed_config"]["rules_stat_prefix"] == "plaintext_"
    assert "accesspolicy" not in repr(probe)  # probes: the probe filter alone decides
    assert http_filters(found["inbound-mtls-http"])[1]["typed_config"][
        "rules_stat_prefix"] == "accesspolicy."


def _workload(**labels: str) -> Workload:
    return Workload("shop", "web-1", labels=tuple(sorted(labels.items())))


@pytest.mark.parametrize(("annotation", "policy_mtls", "label", "want"), [
    (None, None, None, "PERMISSIVE"),
    (None, None, "strict", "STRICT"),
    (None, "PERMISSIVE", "strict", "PERMISSIVE"),  # the policy wins over the namespace
    (None, "STRICT", None, "STRICT"),
    ("permissive", "STRICT", "strict", "PERMISSIVE"),  # the pod's annotation wins over all
])
def test_the_mtls_mode_is_the_pods_then_its_policies_then_its_namespaces(
    annotation: str | None, policy_mtls: str | None, label: str | None, want: str
) -> None:
    spec: Json = {"selector": {"matchLabels": {"app": "web"}}, "allow": [{}]}
    if policy_mtls:
        spec["mtls"] = policy_mtls
    annotations = {contract.MTLS_MODE: annotation} if annotation else {}
    pod = Workload("shop", "web-1", labels=(("app", "web"),),
                   annotations=tuple(annotations.items()))
    namespaces = {("", "shop"): Namespace("shop", ((contract.MTLS_MODE, label),) if label
                                          else ())}
    key = view_key(pod, config=CONFIG, namespaces=namespaces,
                   policies=load(policy_obj("p", spec)))
    assert key.security.mode == want


def test_only_the_policies_selecting_the_pod_are_in_its_view_key() -> None:
    others = load(policy_obj("db", {"selector": {"matchLabels": {"app": "db"}}}),
                  policy_obj("web", {"selector": {"matchLabels": {"app": "web"}}}),
                  policy_obj("web", {}, namespace="other"))
    key = view_key(_workload(app="web"), config=CONFIG, policies=others)
    assert [p.key for p in key.security.policies] == ["shop/web"]
    assert view_key(_workload(app="batch"), config=CONFIG, policies=others).security.policies == ()


SECURITIES = [InboundSecurity(mode, probes, tuple(load(*pols)))
              for mode in ("PERMISSIVE", "STRICT") for probes in ((), PROBES)
              for pols in ((), (FRONTEND_ONLY,), (FRONTEND_ONLY, WEB_API, OPEN))]


@pytest.mark.parametrize("security", SECURITIES,
                         ids=lambda s: f"{s.mode}-{len(s.probes)}probes-{len(s.policies)}pol")
def test_every_combination_fits_the_protobufs_and_envoy_accepts_it(
    security: InboundSecurity
) -> None:
    found = translate([WEB], overrides=parse_overrides({}, config=CONFIG),
                      security=security).by_type()
    converter = Converter()
    for type_url, resources in found.items():
        for name, body in resources.items():
            converter.framed(type_url, Resource.of(name, body))
    result = validate(as_static(found))
    assert result.returncode == 0, result.stderr[-2000:]
