"""AccessPolicies as both registries report them: parsed, or logged and ignored.

A policy that does not parse (the CRD's schema refuses most such at ``kubectl apply``, but an
older CRD, a write that skipped validation or a sandbox file can still hold one) is ignored:
reported to the runtime as absent, so it protects nothing, the same on every replica and after
every restart. It is logged once per version with every problem :func:`mesh.access.parse_policy`
found, and counted in ``meshinject_accesspolicies_invalid`` (the number ignored right now) so an
alert can catch it; ``meshinject access list`` shows it too. Nothing here raises: a bad policy
never stops a watch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from controlplane.metrics import ControlPlaneMetrics
from controlplane.model.state import Change
from controlplane.model.values import Key
from mesh.access import parse_policy
from mesh.errors import MeshError

log = logging.getLogger("meshinject.registry")


class PolicyBook:
    """Which policies are ignored, and why; turns each policy event into a model change."""

    def __init__(self, metrics: ControlPlaneMetrics | None = None) -> None:
        self.metrics = metrics
        self.invalid: dict[Key, str] = {}

    def change(self, key: Key, obj: Mapping[str, Any] | None) -> Change:
        """The change for ``obj`` now at ``key`` (None: deleted)."""
        if obj is None:
            self._forget(key)
            return Change("policy", key, None)
        try:
            policy = parse_policy(obj)
        except MeshError as err:
            if self.invalid.get(key) != str(err):
                log.error("AccessPolicy %s/%s is ignored (it protects nothing until fixed): %s",
                          *key, err)
            self.invalid[key] = str(err)
            self._count()
            return Change("policy", key, None)
        self._forget(key)
        return Change("policy", key, policy)

    def _forget(self, key: Key) -> None:
        if self.invalid.pop(key, None) is not None:
            self._count()

    def _count(self) -> None:
        if self.metrics is not None:
            self.metrics.invalid_policies.set(len(self.invalid))
