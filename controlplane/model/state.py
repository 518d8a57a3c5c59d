"""The mesh as the control plane knows it at one moment, and the changes that move it on.

A registry (the cluster's watches, or the sandbox's plan) reports :class:`Change` values; the
runtime folds them into a new :class:`MeshState` with :func:`apply` and knows, from the kinds of
change, which resources to recompute: an EndpointSlice touches only its Service's endpoints, a
pod only its own proxy, a Service or the mesh config every proxy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from controlplane.model.values import Endpoint, Key, Namespace, Service, Workload
from mesh.settings import MeshConfig

Kind = Literal["service", "endpoints", "workload", "namespace", "config"]


@dataclass(frozen=True)
class Change:
    """One object added, changed or (``value`` None) removed."""

    kind: Kind
    key: Key = ("", "")
    value: Service | tuple[Endpoint, ...] | Workload | Namespace | MeshConfig | None = None


@dataclass(frozen=True)
class MeshState:
    config: MeshConfig = field(default_factory=MeshConfig)
    services: Mapping[Key, Service] = field(default_factory=dict)
    endpoints: Mapping[Key, tuple[Endpoint, ...]] = field(default_factory=dict)
    workloads: Mapping[Key, Workload] = field(default_factory=dict)
    namespaces: Mapping[Key, Namespace] = field(default_factory=dict)  # key ("", name)


@dataclass(frozen=True)
class Dirty:
    """What a batch of changes touched: the runtime recomputes only that."""

    config: bool = False
    services: frozenset[Key] = frozenset()
    endpoints: frozenset[Key] = frozenset()
    workloads: frozenset[Key] = frozenset()
    namespaces: frozenset[Key] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.config or self.services or self.endpoints or self.workloads
                    or self.namespaces)


def apply(state: MeshState, changes: Iterable[Change]) -> tuple[MeshState, Dirty]:
    """The state after ``changes``, and what really changed (equal values are no change)."""
    services, endpoints, workloads = dict(state.services), dict(state.endpoints), dict(
        state.workloads)
    namespaces = dict(state.namespaces)
    config = state.config
    touched: dict[Kind, set[Key]] = {"service": set(), "endpoints": set(), "workload": set(),
                                     "namespace": set()}
    config_changed = False
    tables: dict[Kind, dict[Key, object]] = {
        "service": services, "endpoints": endpoints, "workload": workloads,  # type: ignore[dict-item]
        "namespace": namespaces}  # type: ignore[dict-item]
    for change in changes:
        if change.kind == "config":
            new = change.value if isinstance(change.value, MeshConfig) else MeshConfig()
            if new != config:
                config, config_changed = new, True
            continue
        table = tables[change.kind]
        if change.value is None:
            if table.pop(change.key, None) is not None:
                touched[change.kind].add(change.key)
        elif table.get(change.key) != change.value:
            table[change.key] = change.value
            touched[change.kind].add(change.key)
    new_state = replace(state, config=config, services=services, endpoints=endpoints,
                        workloads=workloads, namespaces=namespaces)
    dirty = Dirty(config_changed, frozenset(touched["service"]),
                  frozenset(touched["endpoints"]), frozenset(touched["workload"]),
                  frozenset(touched["namespace"]))
    return new_state, dirty


def merge(a: Dirty, b: Dirty) -> Dirty:
    return Dirty(a.config or b.config, a.services | b.services, a.endpoints | b.endpoints,
                 a.workloads | b.workloads, a.namespaces | b.namespaces)
