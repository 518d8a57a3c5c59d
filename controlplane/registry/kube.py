"""The cluster's registry: list+watch Services, EndpointSlices, Pods, Namespaces,
AccessPolicies and the mesh ConfigMap.

One thread per resource keeps it current (:func:`mesh.kube.watch.list_watch`, which resumes
after any failure); each event is turned into model values here and handed to the runtime on
its event loop. A relist replaces the whole resource: objects gone from it are reported
removed, so a watch gap never leaves a stale Service or pod behind. The runtime is told it is
synced once every resource was listed once, which is when the control plane turns ready.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from controlplane.metrics import ControlPlaneMetrics
from controlplane.model.state import Change
from controlplane.model.values import Key
from controlplane.registry import objects
from controlplane.registry.policies import PolicyBook
from controlplane.runtime import Runtime
from mesh.contract import CONFIGMAP, access_policies_path
from mesh.errors import MeshError
from mesh.kube.client import Kube
from mesh.kube.watch import list_watch
from mesh.settings import MeshConfig

log = logging.getLogger("meshinject.registry")
Obj = dict[str, Any]

SERVICES = "/api/v1/services"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
PODS = "/api/v1/pods"
NAMESPACES = "/api/v1/namespaces"
ACCESS_POLICIES = access_policies_path()


class KubeRegistry:
    def __init__(self, kube: Kube, *, config_namespace: str,
                 metrics: ControlPlaneMetrics | None = None) -> None:
        self.kube = kube
        self.config_namespace = config_namespace
        self.stop = threading.Event()
        self._listed: set[str] = set()
        self._slices: dict[Key, dict[str, Obj]] = {}  # service -> slice name -> slice
        self._known: dict[str, set[Key]] = {"service": set(), "workload": set(),
                                            "namespace": set(), "policy": set()}
        self.policies = PolicyBook(metrics)
        self._threads: list[threading.Thread] = []

    async def run(self, runtime: Runtime) -> None:
        loop = asyncio.get_running_loop()

        def post(changes: list[Change], listed: str | None = None) -> None:
            def deliver() -> None:
                runtime.submit_all(changes)
                if listed is not None:
                    self._listed.add(listed)
                    if len(self._listed) == len(watches):
                        runtime.synced.set()
            loop.call_soon_threadsafe(deliver)

        watches: list[tuple[str, str, dict[str, Any], Callable[..., list[Change]],
                            Callable[..., list[Change]]]] = [
            ("services", SERVICES, {}, self._service_list, self._service_event),
            ("endpointslices", SLICES, {}, self._slice_list, self._slice_event),
            ("pods", PODS, {}, self._pod_list, self._pod_event),
            ("namespaces", NAMESPACES, {}, self._namespace_list, self._namespace_event),
            ("accesspolicies", ACCESS_POLICIES, {}, self._policy_list, self._policy_event),
            ("config", f"/api/v1/namespaces/{self.config_namespace}/configmaps",
             {"fieldSelector": f"metadata.name={CONFIGMAP}"}, self._config_list,
             self._config_event),
        ]
        for name, path, query, on_list, on_event in watches:
            thread = threading.Thread(
                target=list_watch, name=f"watch-{name}", daemon=True,
                args=(self.kube, path),
                kwargs={"query": query, "stop": self.stop,
                        "on_list": lambda items, f=on_list, n=name: post(f(items), n),
                        "on_event": lambda kind, obj, f=on_event: post(f(kind, obj))})
            thread.start()
            self._threads.append(thread)
        try:
            await asyncio.Event().wait()
        finally:
            self.stop.set()

    # -- Services -------------------------------------------------------------------------
    def _service_list(self, items: list[Obj]) -> list[Change]:
        found = {objects.key_of(i): objects.service(i) for i in items}
        changes = [Change("service", k, v) for k, v in found.items() if v is not None]
        changes += [Change("service", k, None) for k in self._known["service"] - found.keys()]
        self._known["service"] = {k for k, v in found.items() if v is not None}
        return changes

    def _service_event(self, kind: str, obj: Obj) -> list[Change]:
        key = objects.key_of(obj)
        value = None if kind == "DELETED" else objects.service(obj)
        (self._known["service"].add if value else self._known["service"].discard)(key)
        return [Change("service", key, value)]

    # -- EndpointSlices -------------------------------------------------------------------
    def _slice_list(self, items: list[Obj]) -> list[Change]:
        before = set(self._slices)
        self._slices = {}
        for item in items:
            owner = objects.slice_owner(item)
            if owner[1]:
                self._slices.setdefault(owner, {})[objects.key_of(item)[1]] = item
        return [self._endpoints_of(k) for k in before | set(self._slices)]

    def _slice_event(self, kind: str, obj: Obj) -> list[Change]:
        owner = objects.slice_owner(obj)
        if not owner[1]:
            return []
        slices = self._slices.setdefault(owner, {})
        if kind == "DELETED":
            slices.pop(objects.key_of(obj)[1], None)
        else:
            slices[objects.key_of(obj)[1]] = obj
        return [self._endpoints_of(owner)]

    def _endpoints_of(self, owner: Key) -> Change:
        slices = self._slices.get(owner)
        if not slices:
            self._slices.pop(owner, None)
            return Change("endpoints", owner, None)
        return Change("endpoints", owner, objects.endpoints(slices.values()))

    # -- Pods -----------------------------------------------------------------------------
    def _pod_list(self, items: list[Obj]) -> list[Change]:
        found = {objects.key_of(i): objects.workload(i) for i in items}
        live = {k for k, v in found.items() if v is not None}
        changes = [Change("workload", k, found[k]) for k in live]
        changes += [Change("workload", k, None) for k in self._known["workload"] - live]
        self._known["workload"] = live
        return changes

    def _pod_event(self, kind: str, obj: Obj) -> list[Change]:
        key = objects.key_of(obj)
        value = None if kind == "DELETED" else objects.workload(obj)
        if value is None and key not in self._known["workload"]:
            return []  # a pod the mesh does not care about
        (self._known["workload"].add if value else self._known["workload"].discard)(key)
        return [Change("workload", key, value)]

    # -- Namespaces -----------------------------------------------------------------------
    def _namespace_list(self, items: list[Obj]) -> list[Change]:
        found = {("", objects.namespace(i).name): objects.namespace(i) for i in items}
        changes = [Change("namespace", k, v) for k, v in found.items()]
        changes += [Change("namespace", k, None) for k in self._known["namespace"] - found.keys()]
        self._known["namespace"] = set(found)
        return changes

    def _namespace_event(self, kind: str, obj: Obj) -> list[Change]:
        value = objects.namespace(obj)
        key = ("", value.name)
        if kind == "DELETED":
            self._known["namespace"].discard(key)
            return [Change("namespace", key, None)]
        self._known["namespace"].add(key)
        return [Change("namespace", key, value)]

    # -- AccessPolicies (one that does not parse is logged, counted and ignored) ----------
    def _policy_list(self, items: list[Obj]) -> list[Change]:
        found = {objects.key_of(i): i for i in items}
        changes = [self.policies.change(k, v) for k, v in found.items()]
        changes += [self.policies.change(k, None) for k in self._known["policy"] - found.keys()]
        self._known["policy"] = set(found)
        return changes

    def _policy_event(self, kind: str, obj: Obj) -> list[Change]:
        key = objects.key_of(obj)
        if kind == "DELETED":
            self._known["policy"].discard(key)
            return [self.policies.change(key, None)]
        self._known["policy"].add(key)
        return [self.policies.change(key, obj)]

    # -- the mesh config ------------------------------------------------------------------
    def _config(self, obj: Obj | None) -> list[Change]:
        try:
            return [Change("config", value=objects.mesh_config(obj))]
        except MeshError as err:
            log.error("mesh config %s/%s is not valid, keeping the last good one: %s",
                      self.config_namespace, CONFIGMAP, err)
            return []

    def _config_list(self, items: list[Obj]) -> list[Change]:
        return self._config(items[0] if items else None)

    def _config_event(self, kind: str, obj: Obj) -> list[Change]:
        if kind == "DELETED":
            return [Change("config", value=MeshConfig())]
        return self._config(obj)
