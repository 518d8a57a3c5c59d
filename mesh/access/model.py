"""An AccessPolicy as frozen values: what it selects, what mTLS mode it asks for, whom it allows.

The values are hashable (tuples, never lists or dicts) because the control plane keys its caches
on them: two policies that say the same thing are equal, and a changed one is a new key. They
hold what the user wrote, validated (:mod:`mesh.access.parse`), and nothing derived; what a rule
means for one connection is :mod:`mesh.access.decide`'s, and the same rule as Envoy RBAC is
:mod:`mesh.envoy.rbac`'s, so the two read the same fields in the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from mesh.overrides.values import MtlsMode

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
OPERATORS: tuple[Operator, ...] = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry of a label selector."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present


@dataclass(frozen=True)
class Selector:
    """A metav1.LabelSelector: every matchLabels pair and every expression must hold. Empty
    (the default) selects every pod of the policy's namespace."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions)


@dataclass(frozen=True)
class Callers:
    """``from``: mesh callers by identity, proven by their mTLS certificate. A plaintext caller
    has no identity, so no ``from`` ever matches it (omit ``from`` to allow plaintext)."""

    service_accounts: tuple[tuple[str, str], ...] = ()  # (namespace, name)
    namespaces: tuple[str, ...] = ()

    def match(self, caller: tuple[str, str] | None) -> bool:
        return caller is not None and (
            caller in self.service_accounts or caller[0] in self.namespaces)


@dataclass(frozen=True)
class Targets:
    """``to``: what may be reached; each list that is given must match (empty: any). A TCP
    connection has no method or path, so a rule with methods or paths never allows one."""

    ports: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()  # "/exact" or "/prefix*" (a trailing * only)

    @property
    def http_only(self) -> bool:
        return bool(self.methods or self.paths)


@dataclass(frozen=True)
class Rule:
    """One ``spec.allow`` entry: a request is allowed when it matches ``from_`` and ``to``;
    None stands for an omitted ``from`` (any caller, even plaintext) or ``to`` (anything)."""

    from_: Callers | None = None
    to: Targets | None = None

    @property
    def http_only(self) -> bool:
        return self.to is not None and self.to.http_only


@dataclass(frozen=True)
class AccessPolicy:
    """A namespaced AccessPolicy. ``allow`` empty: the pods it selects accept nothing."""

    namespace: str
    name: str
    selector: Selector = Selector()
    mtls: MtlsMode | None = None
    allow: tuple[Rule, ...] = ()

    @property
    def key(self) -> str:
        """``namespace/name``: how the policy is named to users, in reasons and output."""
        return f"{self.namespace}/{self.name}"

    @property
    def counter_name(self) -> str:
        """How the proxy's per-policy counters name it: ``namespace/name`` with each ``.``
        written ``_``. Envoy splits stat names at dots, so a dot would cut the Prometheus label
        short; ``_`` never occurs in a Kubernetes name, so no two policies share one. When two
        policies allow the same request, the proxy counts it for the first by this name."""
        return self.key.replace(".", "_")


def path_matches(pattern: str, path: str) -> bool:
    """``/exact`` matches that path only; ``/prefix*`` every path starting with ``/prefix``
    (so ``/api/*`` matches ``/api/`` and below, not ``/api``), as Envoy's exact and prefix
    path matchers do. ``path`` must already be normalized (:func:`mesh.access.paths.normalize`)."""
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return path == pattern
