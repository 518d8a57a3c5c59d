"""Registry events -> debounce -> translate -> snapshot -> push.

The registry reports changes as they come; the runtime waits until they stop for a moment
(``debounce``, at most ``max_delay`` after the first), folds them into the state, recomputes
only what they touched and wakes the streams, which each send what changed for them:

- an EndpointSlice: that Service's ClusterLoadAssignments, shared by every proxy;
- a Service or the mesh config: every view's clusters, routes and listeners;
- a pod: the view of its own proxy, if its overrides changed.

A *view* is what proxies with the same overrides share (see ``translate.proxy.view_key``): one
translation serves them all, and their snapshots are the same objects. Views nobody uses are
dropped. Everything here runs on one asyncio loop; registries call :meth:`Runtime.submit` from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controlplane.cache.snapshot import EMPTY, Resource, ResourceSet
from controlplane.model.state import Change, Dirty, MeshState, apply
from controlplane.model.values import Key, Workload
from controlplane.translate import endpoints as translate_endpoints
from controlplane.translate.proxy import CLUSTER, ENDPOINT, LISTENER, ROUTE, translate, view_key
from mesh.errors import MeshError
from mesh.overrides.pod import PodOverrides

log = logging.getLogger("meshinject.controlplane")


@dataclass(frozen=True, eq=False)
class View:
    """The listeners, clusters and routes of every proxy with the same overrides."""

    key: PodOverrides
    sets: dict[str, ResourceSet]


@dataclass(eq=False)
class Subscriber:
    """A connected proxy, as the runtime sees it: whose it is and how to wake its stream."""

    workload: Key
    wake: Callable[[], None]
    view: View | None = None
    problem: str = ""


@dataclass
class Stats:
    """Counters the metrics and the benchmark read."""

    rebuilds: int = 0
    last_change_at: float = 0.0  # monotonic time the newest applied change arrived
    generation: int = 0
    change_times: dict[int, float] = field(default_factory=dict)


class Runtime:
    def __init__(self, *, state: MeshState | None = None, debounce: float = 0.05,
                 max_delay: float = 0.5) -> None:
        self.state = state or MeshState()
        self.debounce = debounce
        self.max_delay = max_delay
        self.eds: ResourceSet = EMPTY
        self.views: dict[PodOverrides, View] = {}
        self.subscribers: set[Subscriber] = set()
        self.stats = Stats()
        self.synced = asyncio.Event()  # set once the registry delivered its first full state
        self._pending: list[Change] = []
        self._first_pending = 0.0
        self._wakeup = asyncio.Event()
        self._eds_names: dict[Key, set[str]] = {}  # the ClusterLoadAssignments of each Service
        self._rebuild_eds(self.state.services)

    # -- registry side ------------------------------------------------------------------------
    def submit(self, change: Change) -> None:
        """Queue a change; the run loop applies it after the debounce."""
        if not self._pending:
            self._first_pending = time.monotonic()
        self._pending.append(change)
        self._wakeup.set()

    def submit_all(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self.submit(change)

    async def run(self) -> None:
        """Apply queued changes forever: after ``debounce`` of quiet, or ``max_delay``."""
        while True:
            await self._wakeup.wait()
            while True:
                self._wakeup.clear()
                waited = time.monotonic() - self._first_pending
                remaining = self.max_delay - waited
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._wakeup.wait(), min(self.debounce, remaining))
                except TimeoutError:
                    break
            self.flush()

    def flush(self) -> Dirty:
        """Apply every queued change now (the run loop does this after the debounce)."""
        changes, self._pending = self._pending, []
        if not changes:
            return Dirty()
        arrived = self._first_pending
        self.state, dirty = apply(self.state, changes)
        if dirty:
            self.stats.generation += 1
            self.stats.last_change_at = arrived
            self.stats.change_times[self.stats.generation] = arrived
            if len(self.stats.change_times) > 256:
                del self.stats.change_times[min(self.stats.change_times)]
            self._rebuild(dirty)
        return dirty

    # -- stream side --------------------------------------------------------------------------
    def attach(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)
        self._assign_view(subscriber)

    def detach(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if subscriber.view is not None and not any(
            s.view is subscriber.view for s in self.subscribers
        ):
            self.views.pop(subscriber.view.key, None)

    def sets_for(self, subscriber: Subscriber) -> dict[str, ResourceSet] | None:
        """The four resource sets a subscriber's stream sends from, or None when its pod is
        not known (yet) or its annotations cannot be used."""
        if subscriber.view is None:
            return None
        return {**subscriber.view.sets, ENDPOINT: self.eds}

    # -- rebuilding ---------------------------------------------------------------------------
    def _rebuild(self, dirty: Dirty) -> None:
        self.stats.rebuilds += 1
        # endpoints depend on Services and slices only; views on Services and their overrides,
        # which the mesh config changes: a config change moves proxies to new views (below)
        if dirty.services or dirty.endpoints:
            self._rebuild_eds(dirty.services | dirty.endpoints)
        if dirty.services and not dirty.config:
            for key, view in list(self.views.items()):
                self.views[key] = self._translate(key, previous=view)
            for subscriber in self.subscribers:
                if subscriber.view is not None:
                    subscriber.view = self.views.get(subscriber.view.key)
        if dirty.config:
            self.views = {}  # every key was made under the old config
        for subscriber in self.subscribers:
            if dirty.config or subscriber.workload in dirty.workloads or subscriber.view is None:
                self._assign_view(subscriber)
        for subscriber in list(self.subscribers):
            subscriber.wake()
        used = {id(s.view) for s in self.subscribers}
        for key in [k for k, v in self.views.items() if id(v) not in used]:
            del self.views[key]

    def _rebuild_eds(self, keys: Iterable[Key]) -> None:
        updates: dict[str, Resource | None] = {}
        for key in keys:
            service = self.state.services.get(key)
            names = self._eds_names.pop(key, set())
            if service is None:
                updates.update(dict.fromkeys(names))
                continue
            found = translate_endpoints.assignments(service, self.state.endpoints.get(key, ()))
            updates.update(dict.fromkeys(names - found.keys()))
            updates.update({name: Resource.of(name, body) for name, body in found.items()})
            self._eds_names[key] = set(found)
        self.eds = self.eds.update(updates)

    def _translate(self, key: PodOverrides, *, previous: View | None = None) -> View:
        resources = translate(self.state.services.values(), overrides=key).by_type()
        sets = {}
        for type_url in (LISTENER, CLUSTER, ROUTE):
            built = (Resource.of(name, body) for name, body in resources[type_url].items())
            sets[type_url] = ResourceSet.build(
                built, previous=previous.sets[type_url] if previous else None)
        return View(key, sets)

    def _assign_view(self, subscriber: Subscriber) -> None:
        workload: Workload | None = self.state.workloads.get(subscriber.workload)
        if workload is None:
            subscriber.view, subscriber.problem = None, "its pod is not known to the control plane"
            return
        try:
            key = view_key(workload, config=self.state.config)
        except MeshError as err:
            subscriber.view, subscriber.problem = None, str(err)
            log.warning("pod %s/%s: %s", *subscriber.workload, err)
            return
        if key not in self.views:  # built from the old view when it moves, so the change from
            # it is known and only that is pushed
            self.views[key] = self._translate(key, previous=subscriber.view)
        subscriber.view, subscriber.problem = self.views[key], ""

