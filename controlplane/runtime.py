"""Registry events -> debounce -> translate -> snapshot -> push.

The registry reports changes as they come; the runtime waits until they stop for a moment
(``debounce``, at most ``max_delay`` after the first), folds them into the state, recomputes
only what they touched and wakes the streams, which each send what changed for them:

- an EndpointSlice: that Service's ClusterLoadAssignments, shared by every proxy;
- a Service or the mesh config: every view's clusters, routes and listeners;
- a pod: the view of its own proxy, if its overrides changed; and, if it is an endpoint, its
  Services' assignments (whether it is called over mutual TLS) and, when the service accounts
  behind a Service change, the identities every view's cluster for it expects;
- a namespace: the views of its pods (its label may set their mutual TLS mode).

A *view* is what proxies with the same :class:`~controlplane.translate.proxy.ViewKey` share:
one translation serves them all, and their snapshots are the same objects. Views nobody uses
are dropped. A proxy's secrets (its certificate and the trust bundle) are its own, kept by
:mod:`controlplane.secrets`. Everything here runs on one asyncio loop; registries call
:meth:`Runtime.submit` from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from controlplane.cache.snapshot import EMPTY, Resource, ResourceSet
from controlplane.model.state import Change, Dirty, MeshState, apply
from controlplane.model.values import Key, Workload
from controlplane.translate import endpoints as translate_endpoints
from controlplane.translate.proxy import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    ViewKey,
    translate,
    view_key,
)
from mesh.contract import TRUST_DOMAIN
from mesh.errors import MeshError

log = logging.getLogger("meshinject.controlplane")


@dataclass(frozen=True, eq=False)
class View:
    """The listeners, clusters and routes of every proxy with the same overrides."""

    key: ViewKey
    sets: dict[str, ResourceSet]


@dataclass(eq=False)
class Subscriber:
    """A connected proxy, as the runtime sees it: whose it is and how to wake its stream.

    ``service_account`` is the one its token proved; its certificate names that. ``acked`` is
    the version of each type the proxy last accepted (its stream records it), which a root
    rotation waits for before moving on."""

    workload: Key
    wake: Callable[[], None]
    service_account: str = "default"
    pod_uid: str = ""  # the pod its token was issued for
    view: View | None = None
    problem: str = ""
    secrets: ResourceSet = EMPTY
    identity_problem: str = ""  # why it has no certificate (yet)
    renew_at: float = 0.0  # time.time() at which its certificate is half-way through its life
    expires_at: float = 0.0
    acked: dict[str, str] = field(default_factory=dict)


@dataclass
class Stats:
    """Counters the metrics and the benchmark read."""

    rebuilds: int = 0
    last_change_at: float = 0.0  # monotonic time the newest applied change arrived
    generation: int = 0
    change_times: dict[int, float] = field(default_factory=dict)


class Runtime:
    def __init__(self, *, state: MeshState | None = None, debounce: float = 0.05,
                 max_delay: float = 0.5, trust_domain: str = TRUST_DOMAIN) -> None:
        self.state = state or MeshState()
        self.debounce = debounce
        self.max_delay = max_delay
        self.trust_domain = trust_domain
        self.eds: ResourceSet = EMPTY
        self.views: dict[ViewKey, View] = {}
        # the SPIFFE IDs behind each Service (its endpoints that are pods with a proxy)
        self.identities: dict[Key, tuple[str, ...]] = {}
        # a headless Service's endpoints in the mesh: (port name, address, port)
        self.direct: dict[Key, tuple[tuple[str, str, int], ...]] = {}
        # called whenever a subscriber's pod was looked at (the secrets' issuer)
        self.on_assign: Callable[[Subscriber], None] | None = None
        self.subscribers: set[Subscriber] = set()
        self.stats = Stats()
        self.synced = asyncio.Event()  # set once the registry delivered its first full state
        self._pending: list[Change] = []
        self._first_pending = 0.0
        self._wakeup = asyncio.Event()
        self._eds_names: dict[Key, set[str]] = {}  # the ClusterLoadAssignments of each Service
        self._by_address: dict[str, set[Key]] = {}  # endpoint address -> its Services
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
        before = self.state
        self.state, dirty = apply(self.state, changes)
        if dirty:
            self.stats.generation += 1
            self.stats.last_change_at = arrived
            self.stats.change_times[self.stats.generation] = arrived
            if len(self.stats.change_times) > 256:
                del self.stats.change_times[min(self.stats.change_times)]
            self._rebuild(dirty, before)
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
        """The resource sets a subscriber's stream sends from, or None when its pod is not
        known (yet) or its annotations cannot be used."""
        if subscriber.view is None:
            return None
        return {**subscriber.view.sets, ENDPOINT: self.eds, SECRET: subscriber.secrets}

    def preview(self, workload: Key) -> dict[str, ResourceSet] | str:
        """What a proxy of this pod would be sent (its secrets aside), or why nothing: for
        ``/debug/config``, without connecting anything or issuing a certificate."""
        probe = Subscriber(workload=workload, wake=lambda: None)
        self._assign_view(probe, preview=True)
        try:
            if probe.view is None:
                return probe.problem
            return {**probe.view.sets, ENDPOINT: self.eds}
        finally:
            if probe.view is not None and not any(s.view is probe.view for s in self.subscribers):
                self.views.pop(probe.view.key, None)

    # -- rebuilding ---------------------------------------------------------------------------
    def _rebuild(self, dirty: Dirty, before: MeshState) -> None:
        self.stats.rebuilds += 1
        # endpoints depend on Services, slices and which addresses are pods with a proxy;
        # views on Services, the identities behind them, the pods' own facts and the config
        eds_keys = set(dirty.services | dirty.endpoints)
        for changed_pod in dirty.workloads:
            for workload in (before.workloads.get(changed_pod),
                             self.state.workloads.get(changed_pod)):
                if workload is not None and workload.ip:
                    eds_keys |= self._by_address.get(workload.ip, set())
        services_changed = bool(dirty.services)
        if eds_keys:
            self._rebuild_eds(eds_keys)
            services_changed |= self._refresh_behind(eds_keys)
        if services_changed and not dirty.config:
            for shared, view in list(self.views.items()):
                self.views[shared] = self._translate(shared, previous=view)
            for subscriber in self.subscribers:
                if subscriber.view is not None:
                    subscriber.view = self.views.get(subscriber.view.key)
        if dirty.config:
            self.views = {}  # every key was made under the old config
        namespaces = {name for _, name in dirty.namespaces}
        for subscriber in self.subscribers:
            if (dirty.config or subscriber.workload in dirty.workloads
                    or subscriber.workload[0] in namespaces or subscriber.view is None):
                self._assign_view(subscriber)
        for subscriber in list(self.subscribers):
            subscriber.wake()
        used = {id(s.view) for s in self.subscribers}
        for key in [k for k, v in self.views.items() if id(v) not in used]:
            del self.views[key]

    def _refresh_behind(self, keys: Iterable[Key]) -> bool:
        """Recompute what is behind these Services that the views depend on: the identities
        of their endpoints in the mesh and, for headless ones, those endpoints themselves.
        True if any changed."""
        by_ip = {w.ip: w for w in self.state.workloads.values() if w.ip}
        changed = False
        for key in keys:
            service = self.state.services.get(key)
            listed = self.state.endpoints.get(key, ()) if service else ()
            meshed = [e for e in listed if e.address in by_ip]
            found = tuple(sorted({by_ip[e.address].spiffe_id(self.trust_domain)
                                  for e in meshed}))
            direct: tuple[tuple[str, str, int], ...] = ()
            if service is not None and service.cluster_ip is None:
                direct = tuple(sorted(
                    (port.name, e.address, target) for e in meshed for port in service.ports
                    if (target := e.port_for(port.name)) is not None))
            changed |= _store(self.identities, key, found)
            changed |= _store(self.direct, key, direct)
        return changed

    def _rebuild_eds(self, keys: Iterable[Key]) -> None:
        updates: dict[str, Resource | None] = {}
        meshed = {w.ip for w in self.state.workloads.values() if w.ip}
        for key in keys:
            for services in self._by_address.values():
                services.discard(key)
            service = self.state.services.get(key)
            names = self._eds_names.pop(key, set())
            if service is None:
                updates.update(dict.fromkeys(names))
                continue
            listed = self.state.endpoints.get(key, ())
            for endpoint in listed:
                self._by_address.setdefault(endpoint.address, set()).add(key)
            found = translate_endpoints.assignments(service, listed, meshed=meshed)
            updates.update(dict.fromkeys(names - found.keys()))
            updates.update({name: Resource.of(name, body) for name, body in found.items()})
            self._eds_names[key] = set(found)
        self.eds = self.eds.update(updates)

    def _translate(self, key: ViewKey, *, previous: View | None = None) -> View:
        resources = translate(self.state.services.values(), overrides=key.overrides,
                              security=key.security, identities=self.identities,
                              direct=self.direct).by_type()
        sets = {}
        for type_url in (LISTENER, CLUSTER, ROUTE):
            built = (Resource.of(name, body) for name, body in resources[type_url].items())
            sets[type_url] = ResourceSet.build(
                built, previous=previous.sets[type_url] if previous else None)
        return View(key, sets)

    def _assign_view(self, subscriber: Subscriber, *, preview: bool = False) -> None:
        self._view_of(subscriber)
        if self.on_assign is not None and not preview:
            self.on_assign(subscriber)

    def _view_of(self, subscriber: Subscriber) -> None:
        workload: Workload | None = self.state.workloads.get(subscriber.workload)
        if workload is None:
            subscriber.view, subscriber.problem = None, "its pod is not known to the control plane"
            return
        try:
            key = view_key(workload, config=self.state.config,
                           namespaces=self.state.namespaces)
        except MeshError as err:
            subscriber.view, subscriber.problem = None, str(err)
            log.warning("pod %s/%s: %s", *subscriber.workload, err)
            return
        if key not in self.views:  # built from the old view when it moves, so the change from
            # it is known and only that is pushed
            self.views[key] = self._translate(key, previous=subscriber.view)
        subscriber.view, subscriber.problem = self.views[key], ""



T = TypeVar("T")


def _store(table: dict[Key, tuple[T, ...]], key: Key, value: tuple[T, ...]) -> bool:
    """Keep ``value`` under ``key`` (an empty one removes it); True if that changed anything."""
    if table.get(key, ()) == value:
        return False
    if value:
        table[key] = value
    else:
        table.pop(key, None)
    return True
