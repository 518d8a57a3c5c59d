"""The sandbox's registry: a JSON file holding a ``List`` of Kubernetes objects, re-read when
it changes.

The sandbox's supervisor is the sandbox's API server: it writes the Services, EndpointSlices
(readiness from its probes), Pods and the mesh ConfigMap it runs, replacing the file in one
rename. This registry polls the file's identity every ``interval`` and reports the differences,
so the control plane runs the same translation against the sandbox as against a cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from controlplane.model.state import MeshState
from controlplane.registry import objects
from controlplane.runtime import Runtime
from mesh.errors import MeshError

log = logging.getLogger("meshinject.registry")


class FileRegistry:
    def __init__(self, path: str | Path, *, interval: float = 0.1) -> None:
        self.path = Path(path)
        self.interval = interval
        self._seen: tuple[int, int, int] | None = None
        self._state: MeshState | None = None

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
            listing = json.loads(self.path.read_text())
            items = listing.get("items") if isinstance(listing, dict) else None
            if not isinstance(items, list):
                raise MeshError("expected a List with items")
            self._state, found = objects.changes(items, previous=self._state)
        except (OSError, ValueError, MeshError) as err:
            log.warning("cannot use %s: %s (keeping the last good state)", self.path, err)
            return True
        runtime.submit_all(found)
        runtime.synced.set()
        return True

    async def run(self, runtime: Runtime) -> None:
        while True:
            self.poll(runtime)
            await asyncio.sleep(self.interval)
