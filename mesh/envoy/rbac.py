"""AccessPolicies as Envoy RBAC filters for a pod's inbound chains, with counters per policy.

The policies handed in are those that select the pod (:func:`mesh.access.applicable`); none
means no filter at all (everything allowed). Otherwise one ALLOW engine: a request passes when
some rule of some policy matches, and anything else is denied (HTTP 403; TCP: the connection is
closed). The semantics are :func:`mesh.access.decide`'s; tests/dataplane/test_access_envoy.py
runs both on one table of requests against a real Envoy.

Identity: the caller's mTLS certificate names it by URI SAN ``spiffe://<td>/ns/<ns>/sa/<sa>``,
which RBAC's ``authenticated.principal_name`` matches (exactly for a service account, by the
prefix ``spiffe://<td>/ns/<ns>/sa/`` for a namespace). A plaintext connection matches only rules
without ``from``.

Shape: Envoy's Policy is (any permission) AND (any principal), and only permissions can test the
destination port, only principals the caller, so one Envoy policy cannot hold every rule of an
AccessPolicy. Rules are grouped by their port list: a group is one Envoy policy whose
permissions are those ports and whose principals are its rules (caller AND method AND path, the
last two only over HTTP, where principals can test headers and paths too). Most policies make
one group, named like the policy; later groups add ``#1``, ``#2`` (``#`` sorts before any name
character, so Envoy, which tries its policies in name order, still tries one AccessPolicy's
groups together and the AccessPolicies in :attr:`~mesh.access.AccessPolicy.counter_name` order,
as ``decide`` does).

Counters, measured on Envoy 1.40 (its Prometheus names; docs/security.md tells how to read them):

- HTTP, per pod: ``envoy_http_rbac_allowed`` / ``envoy_http_rbac_denied`` with
  ``envoy_rbac_http_prefix="accesspolicy"``; per policy (``track_per_rule_stats``):
  ``envoy_http_rbac_policy_allowed{envoy_rbac_policy_name="shop/web"}``, the request counted
  for the first policy by name that allows it. An ALLOW engine has no per-policy denial (a
  denial is every selecting policy's), so :func:`http_filters` puts one shadow (never
  enforcing) filter per policy first: ``envoy_http_rbac_shadow_allowed`` /
  ``envoy_http_rbac_shadow_denied{envoy_rbac_http_prefix="shop/web"}`` count the requests that
  policy alone allows or does not.
- TCP, per pod: ``envoy_rbac_allowed`` / ``envoy_rbac_denied{envoy_rbac_prefix="accesspolicy"}``.
  Envoy 1.40's network RBAC filter has no per-rule counters, so :func:`network_filters` puts one
  shadow (never enforcing) filter per policy before the enforcing one:
  ``envoy_rbac_shadow_allowed`` / ``envoy_rbac_shadow_denied{envoy_rbac_prefix="shop/web"}``
  count the connections that policy alone allows or does not.
"""

from __future__ import annotations

from collections.abc import Sequence

from mesh.access.model import AccessPolicy, Callers, Rule
from mesh.envoy.base import EXTENSIONS, Json
from mesh.pki.spiffe import namespace_prefix, spiffe_id

RBAC_HTTP = EXTENSIONS + "filters.http.rbac.v3.RBAC"
RBAC_NETWORK = EXTENSIONS + "filters.network.rbac.v3.RBAC"
STAT_PREFIX = "accesspolicy"  # the per-pod counters' label (a policy's always holds a "/")
# What the HTTP connection manager of every chain carrying :func:`http_filters` must set, so the
# path a rule is compared with is the path the app receives (see mesh/access/paths.py).
HCM_PATH_OPTIONS: Json = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
}
# The tcp_proxy after :func:`network_filters`: connect to the app only once the caller's first
# bytes have passed the RBAC filter, so a denied caller never reaches the app at all. (Envoy's
# network RBAC decides on the first bytes; a server-first protocol, whose client waits for a
# greeting, needs IMMEDIATE, and then the greeting reaches a denied caller before it is closed.)
TCP_PROXY_OPTIONS: Json = {"upstream_connect_mode": "ON_DOWNSTREAM_DATA",
                           "max_early_data_bytes": 65536}


def _any_of(ids: list[Json]) -> Json:
    return ids[0] if len(ids) == 1 else {"or_ids": {"ids": ids}}


def _callers(callers: Callers, trust_domain: str) -> Json:
    names = [{"exact": spiffe_id(trust_domain, ns, sa)} for ns, sa in callers.service_accounts]
    names += [{"prefix": namespace_prefix(trust_domain, ns)} for ns in callers.namespaces]
    return _any_of([{"authenticated": {"principal_name": n}} for n in names])


def _principal(rule: Rule, trust_domain: str) -> Json:
    """Who (and, over HTTP, which method and path) a rule admits."""
    parts = [] if rule.from_ is None else [_callers(rule.from_, trust_domain)]
    if rule.to is not None and rule.to.methods:
        parts.append(_any_of([{"header": {"name": ":method", "string_match": {"exact": m}}}
                              for m in rule.to.methods]))
    if rule.to is not None and rule.to.paths:
        parts.append(_any_of([{"url_path": {"path": (
            {"prefix": p[:-1]} if p.endswith("*") else {"exact": p})}} for p in rule.to.paths]))
    if not parts:
        return {"any": True}
    return parts[0] if len(parts) == 1 else {"and_ids": {"ids": parts}}


def envoy_policies(policy: AccessPolicy, *, trust_domain: str, tcp: bool) -> dict[str, Json]:
    """The Envoy policies of one AccessPolicy, by name; over TCP (``tcp``) only the rules
    without methods or paths, the only ones that can allow a connection."""
    groups: dict[tuple[int, ...], list[Rule]] = {}
    for rule in policy.allow:
        if not (tcp and rule.http_only):
            groups.setdefault(rule.to.ports if rule.to else (), []).append(rule)
    out: dict[str, Json] = {}
    for i, (ports, rules) in enumerate(groups.items()):
        name = policy.counter_name + (f"#{i}" if i else "")
        out[name] = {
            "permissions": [{"destination_port": p} for p in ports] or [{"any": True}],
            "principals": [_principal(r, trust_domain) for r in rules],
        }
    return out


def _filters(policies: Sequence[AccessPolicy], *, trust_domain: str, tcp: bool) -> list[Json]:
    """One shadow (counting, never enforcing) filter per policy, then the enforcing one over
    all of them; each policy translated once. Counting first: a denial stops the chain at the
    enforcing filter, and what follows never sees the request or connection."""
    if not policies:
        return []
    name, kind = (("envoy.filters.network.rbac", RBAC_NETWORK) if tcp
                  else ("envoy.filters.http.rbac", RBAC_HTTP))
    each = [(policy.counter_name, envoy_policies(policy, trust_domain=trust_domain, tcp=tcp))
            for policy in sorted(policies, key=lambda p: p.counter_name)]
    counting = [{"name": name, "typed_config": {
        "@type": kind, "shadow_rules": {"action": "ALLOW", "policies": own},
        **({"stat_prefix": f"{counter}."} if tcp else {"shadow_rules_stat_prefix": f"{counter}."}),
    }} for counter, own in each]
    rules = {"action": "ALLOW", "policies": {k: v for _, own in each for k, v in own.items()}}
    enforcing: Json = {"@type": kind, "rules": rules}
    if tcp:
        enforcing["stat_prefix"] = f"{STAT_PREFIX}."
    else:
        enforcing |= {"rules_stat_prefix": f"{STAT_PREFIX}.", "track_per_rule_stats": True}
    return [*counting, {"name": name, "typed_config": enforcing}]


def http_filters(policies: Sequence[AccessPolicy], *, trust_domain: str) -> list[Json]:
    """What an inbound HTTP chain puts first (before the router; its connection manager needs
    :data:`HCM_PATH_OPTIONS`): one shadow filter per policy, whose counters say what that policy
    alone allows and denies, then the enforcing ``envoy.filters.http.rbac`` (HTTP 403); nothing
    without policies."""
    return _filters(policies, trust_domain=trust_domain, tcp=False)


def network_filters(policies: Sequence[AccessPolicy], *, trust_domain: str) -> list[Json]:
    """What an inbound TCP chain puts before its tcp_proxy: one shadow filter per policy (its
    counters), then the enforcing ``envoy.filters.network.rbac`` (a denied connection is
    closed); nothing without policies."""
    return _filters(policies, trust_domain=trust_domain, tcp=True)
