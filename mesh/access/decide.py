"""Which policies protect a pod, its mTLS mode, and whether one request or connection may pass.

These are the semantics the inbound proxy enforces (:mod:`mesh.envoy.rbac` writes the same rules
as Envoy RBAC; tests/dataplane/test_access_envoy.py holds the two to one table of requests):

- a pod no policy selects accepts every caller;
- under STRICT mTLS a plaintext connection is refused before any policy is consulted (the
  proxy has no plaintext listener), whatever the policies say;
- a pod some policy selects accepts exactly what some rule of some selecting policy allows, and
  denies everything else: HTTP with 403, TCP by closing the connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mesh.access.model import AccessPolicy, Rule, path_matches
from mesh.access.paths import normalize
from mesh.contract import MTLS_MODE
from mesh.errors import AnnotationError
from mesh.overrides.values import MtlsMode, parse_mtls_mode


@dataclass(frozen=True)
class Decision:
    allowed: bool
    policy: str | None  # "namespace/name" of the allowing policy
    reason: str  # a sentence a user reads


@dataclass(frozen=True)
class MtlsChoice:
    """A pod's mTLS mode, what set it (``pod annotation``, ``policy``, ``namespace label``,
    ``default``) and how (``detail``), and a bad namespace label that was ignored."""

    mode: MtlsMode
    source: str
    detail: str
    problem: str | None = None


def selects(policy: AccessPolicy, *, namespace: str, labels: Mapping[str, str]) -> bool:
    """A policy protects the pods of its own namespace that its selector matches."""
    return policy.namespace == namespace and policy.selector.matches(labels)


def applicable(policies: Iterable[AccessPolicy], *, namespace: str,
               labels: Mapping[str, str]) -> tuple[AccessPolicy, ...]:
    """The policies that select the pod, by name: a stable order gives a stable config."""
    found = (p for p in policies if selects(p, namespace=namespace, labels=labels))
    return tuple(sorted(found, key=lambda p: p.key))


def mtls_choice(*, pod: MtlsMode | None, policies: Sequence[AccessPolicy],
                namespace_labels: Mapping[str, str]) -> MtlsChoice:
    """The pod annotation, else the selecting policies (STRICT if any says STRICT), else the
    namespace label (any case), else PERMISSIVE. A namespace label we cannot read is ignored
    (the next source decides) and returned as ``problem``, for the caller to report: ``meshinject
    access`` prints it, the control plane logs it."""
    if pod is not None:
        return MtlsChoice(pod, "pod annotation", f"annotation {MTLS_MODE} on the pod")
    for mode in ("STRICT", "PERMISSIVE"):
        saying = [p.key for p in policies if p.mtls == mode]
        if saying:
            named = ", ".join(saying)
            return MtlsChoice(mode, "policy", f"AccessPolicy {named} says {mode}")
    problem = None
    label = namespace_labels.get(MTLS_MODE)
    if label is not None:
        try:
            mode = parse_mtls_mode(MTLS_MODE, label)
        except AnnotationError as err:
            ignored = AnnotationError(MTLS_MODE, label, err.why, where="label")
            problem = f"namespace {ignored}; it is ignored"
        else:
            return MtlsChoice(mode, "namespace label", f"label {MTLS_MODE}={label} on the "
                              "namespace")
    return MtlsChoice("PERMISSIVE", "default", "the default: no pod annotation, policy or "
                      "namespace label sets it", problem)


def mtls_mode(*, pod: MtlsMode | None, policies: Sequence[AccessPolicy],
              namespace_labels: Mapping[str, str]) -> MtlsMode:
    """The pod's mode; ``policies`` are those that select it (:func:`applicable`)."""
    return mtls_choice(pod=pod, policies=policies, namespace_labels=namespace_labels).mode


def why_not(rule: Rule, *, caller: tuple[str, str] | None, port: int, method: str | None,
            path: str | None) -> str | None:
    """Why ``rule`` does not allow the request (None: it does). ``path`` is normalized."""
    if rule.from_ is not None and not rule.from_.match(caller):
        if caller is None:
            return "from names mesh callers, and a plaintext caller has no identity"
        listed = [f"{ns}/{sa}" for ns, sa in rule.from_.service_accounts]
        listed += [f"namespace {ns}" for ns in rule.from_.namespaces]
        return f"caller {caller[0]}/{caller[1]} is not one of from: {', '.join(listed)}"
    to = rule.to
    if to is None:
        return None
    if to.ports and port not in to.ports:
        return f"port {port} is not one of to.ports: {', '.join(map(str, to.ports))}"
    if (to.methods and method is None) or (to.paths and path is None):
        return "it names methods or paths, which a TCP connection does not have"
    if to.methods and method not in to.methods:
        return f"method {method} is not one of to.methods: {', '.join(to.methods)}"
    if to.paths and path is not None and not any(path_matches(p, path) for p in to.paths):
        return f"path {path} matches none of to.paths: {', '.join(to.paths)}"
    return None


def describe(*, caller: tuple[str, str] | None, port: int, method: str | None,
             path: str | None) -> str:
    who = "a plaintext caller" if caller is None else f"caller {caller[0]}/{caller[1]}"
    what = "a TCP connection" if method is None and path is None else \
        f"{method or 'any method'} {path or ''}".rstrip()
    return f"{who}, port {port}, {what}"


def decide(policies: Sequence[AccessPolicy], *, mode: MtlsMode, caller: tuple[str, str] | None,
           port: int, method: str | None, path: str | None) -> Decision:
    """Whether the pod's proxy lets this through. ``policies``: those that select the pod;
    ``caller``: (namespace, service account) over mesh mTLS, None for plaintext; ``method`` and
    ``path`` None for a TCP connection. ``path`` is normalized as the proxy normalizes it."""
    if mode == "STRICT" and caller is None:
        return Decision(False, None, "refused before authorization: the pod's mTLS mode is "
                        "STRICT, so its proxy accepts only mesh mTLS and this connection is "
                        "plaintext")
    if not policies:
        return Decision(True, None, "allowed: no AccessPolicy selects this pod, so it "
                        "accepts every caller")
    seen = path if path is None else normalize(path)
    for policy in sorted(policies, key=lambda p: p.counter_name):
        for i, rule in enumerate(policy.allow):
            if why_not(rule, caller=caller, port=port, method=method, path=seen) is None:
                return Decision(True, policy.key, f"allowed by AccessPolicy {policy.key} "
                                f"(spec.allow[{i}])")
    names = ", ".join(p.key for p in sorted(policies, key=lambda p: p.key))
    request = describe(caller=caller, port=port, method=method, path=seen)
    return Decision(False, None, f"denied: {request}; AccessPolicy {names} "
                    f"{'selects' if len(policies) == 1 else 'select'} this pod and no rule "
                    "allows it")


def explain(policies: Sequence[AccessPolicy], *, caller: tuple[str, str] | None, port: int,
            method: str | None, path: str | None) -> list[str]:
    """One line per rule of each policy: what it says about this request (for the CLI)."""
    seen = path if path is None else normalize(path)
    lines = []
    for policy in sorted(policies, key=lambda p: p.key):
        if not policy.allow:
            lines.append(f"{policy.key}: allows nothing (spec.allow is empty)")
        for i, rule in enumerate(policy.allow):
            why = why_not(rule, caller=caller, port=port, method=method, path=seen)
            lines.append(f"{policy.key} spec.allow[{i}]: " + (
                "allows it" if why is None else f"does not allow it: {why}"))
    return lines
