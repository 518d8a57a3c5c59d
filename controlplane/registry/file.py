"""The sandbox's registry: a JSON file holding a ``List`` of Kubernetes objects, re-read when
it changes.

The sandbox's supervisor is the sandbox's API server: it writes the Services, EndpointSlices
(readiness from its probes), Pods, Namespaces and the mesh ConfigMap it runs, replacing the
file in one rename. This registry polls the file's identity every ``interval`` and reports
what changed, object by object (an unchanged object is not converted again, so a big file with
one edit costs its parse and little more), so the control plane runs the same translation
against the sandbox as against a cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from controlplane.model.state import Change
from controlplane.model.values import Key
from controlplane.registry import objects
from controlplane.runtime import Runtime
from mesh.errors import MeshError

log = logging.getLogger("meshinject.registry")
ObjectKey = tuple[str, str, str]  # (kind, namespace, name)


class FileRegistry:
    def __init__(self, path: str | Path, *, interval: float = 0.1) -> None:
        self.path = Path(path)
        self.interval = interval
        self._seen: tuple[int, int, int] | None = None
        self._objects: dict[ObjectKey, dict[str, Any]] = {}

    def poll(self, runtime: Runtime) -> bool:
        """Read the file if it changed and submit the differences; True when it was read."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return False
        identity = (info.st_ino, info.st_mtime_ns, info.st_size)
        if identity == self._seen:
            return False
        self._seen = identity
        try:
            listing = orjson.loads(self.path.read_bytes())
            items = listing.get("items") if isinstance(listing, dict) else None
            if not isinstance(items, list):
                raise MeshError("expected a List with items")
            changes = self._changes(items)
        except (OSError, ValueError, MeshError) as err:
            log.warning("cannot use %s: %s (keeping the last good state)", self.path, err)
            return True
        runtime.submit_all(changes)
        runtime.synced.set()
        return True

    def _changes(self, items: list[Any]) -> list[Change]:
        """What differs from the last file, as the cluster's watches would report it."""
        fresh: dict[ObjectKey, dict[str, Any]] = {}
        for obj in items:
            if isinstance(obj, dict):
                namespace, name = objects.key_of(obj)
                fresh[(str(obj.get("kind")), namespace, name)] = obj
        touched = [k for k in fresh.keys() | self._objects.keys()
                   if fresh.get(k) != self._objects.get(k)]
        old, self._objects = self._objects, fresh
        changes: list[Change] = []
        owners: set[Key] = set()
        for kind, namespace, name in touched:
            obj = fresh.get((kind, namespace, name))
            if kind == "Service":
                changes.append(Change("service", (namespace, name),
                                      objects.service(obj) if obj else None))
            elif kind == "Pod":
                changes.append(Change("workload", (namespace, name),
                                      objects.workload(obj) if obj else None))
            elif kind == "EndpointSlice":
                for version in (obj, old.get((kind, namespace, name))):
                    if version is not None:
                        owners.add(objects.slice_owner(version))
            elif kind == "Namespace":
                changes.append(Change("namespace", ("", name),
                                      objects.namespace(obj) if obj else None))
            elif kind == "ConfigMap":
                changes.append(Change("config", value=objects.mesh_config(obj)))
        if owners:
            by_owner: dict[Key, list[dict[str, Any]]] = {}
            for (kind, _, _), obj in fresh.items():
                if kind == "EndpointSlice":
                    by_owner.setdefault(objects.slice_owner(obj), []).append(obj)
            for owner in owners:
                slices = by_owner.get(owner)
                changes.append(Change("endpoints", owner,
                                      objects.endpoints(slices) if slices else None))
        return changes

    async def run(self, runtime: Runtime) -> None:
        while True:
            self.poll(runtime)
            await asyncio.sleep(self.interval)
