"""``meshinject access``: what the AccessPolicies of a cluster say, answered as the proxies will.

The I/O here is reading pods, namespaces and AccessPolicies through :class:`mesh.kube.client.Kube`;
the decision is :func:`mesh.access.decide`, the same function the data-plane tests hold the real
Envoy to, and the mTLS mode is :func:`mesh.access.mtls_choice`, the control plane's precedence
(pod annotation, then the selecting policies, then the namespace label, then PERMISSIVE).

A policy that does not parse is shown with its problems and left out of every answer, as the
control plane leaves it out (it protects nothing until fixed).

- ``check``: one request (``--method``/``--path``) or one TCP connection (neither given), from a
  mesh caller (``--from NS/SA``, over mutual TLS) or a plaintext one (``--plaintext``), to one
  pod and port: allowed or denied, and which policy and rule decides; or that no policy selects
  the pod, so everything is allowed, in mode X. Exit 0 allowed, 1 denied.
- ``list``: every policy (of a namespace, or all), its mode, its rules, the pods it selects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from mesh.access import AccessPolicy, applicable, decide, explain, mtls_choice, parse_policy
from mesh.access.decide import selects
from mesh.contract import MTLS_MODE, STATUS
from mesh.errors import MeshError
from mesh.kube.client import Kube
from mesh.overrides.values import MtlsMode, parse_mtls_mode

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Found:
    """The policies of a namespace (or all), split into those that parse and those that do
    not (``namespace/name`` -> the parser's message)."""

    policies: tuple[AccessPolicy, ...]
    invalid: tuple[tuple[str, str], ...]


def read_policies(items: Sequence[Obj]) -> Found:
    good, bad = [], []
    for item in items:
        try:
            good.append(parse_policy(item))
        except MeshError as err:
            meta = item.get("metadata") if isinstance(item, Mapping) else None
            meta = meta if isinstance(meta, Mapping) else {}
            bad.append((f"{meta.get('namespace', '?')}/{meta.get('name', '?')}", str(err)))
    return Found(tuple(sorted(good, key=lambda p: p.key)), tuple(sorted(bad)))


def _labels(obj: Obj) -> dict[str, str]:
    return {str(k): str(v) for k, v in ((obj.get("metadata") or {}).get("labels") or {}).items()}


def parse_caller(text: str) -> tuple[str, str]:
    """``NS/SA`` -> (namespace, service account); ValueError naming the value."""
    namespace, slash, account = text.partition("/")
    if not slash or not namespace or not account or "/" in account:
        raise ValueError(f"--from {text!r}: expected NAMESPACE/SERVICEACCOUNT (shop/frontend)")
    return namespace, account


def check(kube: Kube, *, namespace: str, pod: str, caller: tuple[str, str] | None, port: int,
          method: str | None, path: str | None, out: TextIO) -> int:
    """Print the answer for one request or connection to ``pod``; 0 allowed, 1 denied, 2 when
    the pod's own mTLS annotation cannot be read (its proxy gets no config at all)."""
    obj = kube.get_pod(namespace, pod)
    labels = _labels(obj)
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    ns_labels = _labels(kube.get_namespace(namespace))
    found = read_policies(kube.list_access_policies(namespace))
    chosen = applicable(found.policies, namespace=namespace, labels=labels)
    pod_mode: MtlsMode | None = None
    if MTLS_MODE in annotations:
        try:
            pod_mode = parse_mtls_mode(MTLS_MODE, str(annotations[MTLS_MODE]))
        except MeshError as err:
            print(f"pod {namespace}/{pod}: {err}; its proxy gets no config until it is fixed",
                  file=out)
            return 2
    choice = mtls_choice(pod=pod_mode, policies=chosen, namespace_labels=ns_labels)
    if (method or path) and not method:
        method = "GET"
    if method and not path:
        path = "/"
    decision = decide(chosen, mode=choice.mode, caller=caller, port=port, method=method,
                      path=path)
    print(decision.reason, file=out)
    print(f"pod {namespace}/{pod}: mTLS mode {choice.mode} ({choice.detail})", file=out)
    if choice.problem:
        print(f"  note: {choice.problem}", file=out)
    if STATUS not in annotations:
        print("  note: the pod is not injected, so no proxy enforces this (the answer is what "
              "its proxy would do once injected)", file=out)
    if chosen:
        print("policies selecting it, rule by rule:", file=out)
        for line in explain(chosen, caller=caller, port=port, method=method, path=path):
            print(f"  {line}", file=out)
    for key, why in found.invalid:
        print(f"  ignored: AccessPolicy {key} does not parse and protects nothing: {why}",
              file=out)
    return 0 if decision.allowed else 1


def _mtls(policy: AccessPolicy) -> str:
    return policy.mtls or "-"


def show_list(kube: Kube, *, namespace: str | None, out: TextIO) -> int:
    """A table of the policies and the pods each selects; 1 if any policy does not parse."""
    found = read_policies(kube.list_access_policies(namespace))
    if not found.policies and not found.invalid:
        where = f"namespace {namespace}" if namespace else "any namespace"
        print(f"No AccessPolicies in {where}: every pod accepts every caller.", file=out)
        return 0
    pods: dict[str, Sequence[Obj]] = {}
    for ns in sorted({p.namespace for p in found.policies}):
        pods[ns] = kube.list_pods(ns)
    rows = [("NAMESPACE", "POLICY", "MTLS", "RULES", "PODS")]
    for policy in found.policies:
        selected = sorted(str((p.get("metadata") or {}).get("name", "?"))
                          for p in pods[policy.namespace]
                          if selects(policy, namespace=policy.namespace, labels=_labels(p)))
        rows.append((policy.namespace, policy.name, _mtls(policy), str(len(policy.allow)),
                     ", ".join(selected) or "(none)"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  "
              + row[4], file=out)
    for key, why in found.invalid:
        print(f"INVALID {key} (ignored: protects nothing until fixed): {why}", file=out)
    return 1 if found.invalid else 0
