"""The Aggregated Discovery Service: one gRPC stream per proxy, state of the world.

A stream starts with the proxy's bearer token (verified before anything else: a stream without
a valid token is closed UNAUTHENTICATED) and its node, whose namespace and pod must be the
token's. Then, per resource type, the stream keeps what it sent and what the proxy said:

- Listeners and Clusters are sent whole whenever any of them changed (the protocol wants the
  complete set); ClusterLoadAssignments and RouteConfigurations only the named ones the proxy
  asked for and that changed since it got them.
- A request carrying the nonce of the last response is its ACK (``version_info`` is what the
  proxy now runs) or, with ``error_detail``, its NACK: logged, counted, shown by ``/debug`` and
  ``inspect``; Envoy keeps its last good config and the same version is not sent again. A
  request with an older nonce is stale and ignored.
- Pushes go out in the order clusters, endpoints, listeners, routes, so a proxy is never told
  about a reference before the thing it refers to.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.cache.snapshot import ResourceSet, changed_between
from controlplane.grpc.convert import ConversionError, Converter, response
from controlplane.identity.authn import Authenticator, AuthError, Identity
from controlplane.metrics import ControlPlaneMetrics
from controlplane.runtime import Runtime, Subscriber
from controlplane.translate.proxy import CLUSTER, LISTENER, TYPE_ORDER

log = logging.getLogger("meshinject.xds")
_WILDCARD = frozenset({LISTENER, CLUSTER})
_nonces = itertools.count(1)


def short_type(type_url: str) -> str:
    """``...cluster.v3.Cluster`` -> ``Cluster`` (for logs, metrics and /debug)."""
    return type_url.rsplit(".", 1)[-1]


@dataclass
class TypeState:
    """One resource type on one stream."""

    wildcard: bool
    names: frozenset[str] = frozenset()  # subscribed, for named types (shared, see below)
    listed: tuple[str, ...] = ()  # the names as the last request listed them
    pending: set[str] = field(default_factory=set)  # asked for, not sent yet
    sent_set: ResourceSet | None = None  # the set the last response came from
    nonce: str = ""
    version: str = ""  # the version_info of the last response
    generation: int = 0  # the runtime's generation that response carried
    acked: str = ""
    acked_at: float = 0.0  # time.time() of the last ACK (what a benchmark times pushes by)
    nack: tuple[str, str] | None = None  # (version refused, Envoy's message)
    pushes: int = 0


class Stream:
    """One proxy's ADS stream: its requests in, its responses out."""

    def __init__(self, *, identity: Identity, node_id: str, runtime: Runtime,
                 converter: Converter, metrics: ControlPlaneMetrics) -> None:
        self.identity = identity
        self.node_id = node_id
        self.runtime = runtime
        self.converter = converter
        self.metrics = metrics
        self.types: dict[str, TypeState] = {}
        self.connected_at = time.time()
        self.closed = False
        self._wakeup = asyncio.Event()
        self.subscriber = Subscriber(workload=(identity.namespace, identity.pod_name),
                                     wake=self._wakeup.set,
                                     service_account=identity.service_account,
                                     pod_uid=identity.pod_uid)

    def wake(self) -> None:
        self._wakeup.set()

    def handle(self, request: discovery_pb2.DiscoveryRequest) -> None:
        """Record a request: an ACK or NACK of our last response, and what it subscribes to."""
        type_url = request.type_url
        state = self.types.get(type_url)
        if state is None:
            state = self.types[type_url] = TypeState(wildcard=type_url in _WILDCARD)
        if request.response_nonce:
            if request.response_nonce != state.nonce:
                return  # stale: a newer response is on its way to the proxy
            if request.HasField("error_detail"):
                message = request.error_detail.message
                if state.nack is None or state.nack[0] != state.version:
                    self.metrics.nacks.labels(short_type(type_url)).inc()
                    log.warning("NACK from %s for %s version %s: %s", self.node_id,
                                short_type(type_url), state.version, message)
                state.nack = (state.version, message)
            else:
                state.acked = request.version_info
                state.acked_at = time.time()
                self.subscriber.acked[type_url] = request.version_info
                state.nack = None
                started = self.runtime.stats.change_times.get(state.generation)
                if started is not None:
                    self.metrics.ack_latency.observe(time.monotonic() - started)
        if not state.wildcard:
            listed = tuple(request.resource_names)
            if listed != state.listed:  # most requests are ACKs that repeat the names
                canonical, names = _subscription(listed)
                added = names - state.names
                state.pending |= added
                state.names, state.listed = names, canonical
                if added:
                    self._wakeup.set()
        if not request.response_nonce:
            self._wakeup.set()  # a first request: answer it

    def _response(self, type_url: str, current: ResourceSet) -> bytes | None:
        """What this stream must send of ``type_url`` now, or None. The proxy holds, for every
        name it subscribes to, the version in ``sent_set`` (the set the last response came
        from): so what changed since is what it lacks, and no per-stream copy of the names is
        kept (a thousand proxies share the sets)."""
        state = self.types.get(type_url)
        if state is None or (current is state.sent_set and not state.pending):
            return None
        changed = current.changed_since(state.sent_set)
        if changed is None:  # too far behind, or nothing sent yet: compare versions
            changed = frozenset(changed_between(state.sent_set, current,
                                                None if state.wildcard else state.names))
        if state.wildcard:
            if state.sent_set is not None and not changed:
                state.sent_set = current
                return None
            chosen = list(current.items.values())
        else:
            wanted = (changed & state.names) | state.pending
            chosen = [current.items[n] for n in sorted(wanted) if n in current.items]
            if not chosen:
                state.sent_set = current
                return None
        try:
            if state.wildcard:
                resources = self.converter.framed_set(type_url, current.version, chosen)
            else:
                resources = b"".join(self.converter.framed(type_url, r) for r in chosen)
        except ConversionError as err:
            self.metrics.conversion_errors.inc()
            log.error("not pushed to %s: %s", self.node_id, err)
            return None
        state.sent_set = current
        if not state.wildcard:
            state.pending = {n for n in state.pending if n not in current.items}
        state.nonce = str(next(_nonces))
        state.version = current.version
        state.generation = self.runtime.stats.generation
        state.pushes += 1
        self.metrics.pushes.labels(short_type(type_url)).inc()
        return response(version=current.version, resources=resources, type_url=type_url,
                        nonce=state.nonce)

    async def serve(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Write every response this stream must send, as the runtime's state moves on, until
        the stream closes. Between pushes no response is referenced: a stream that was last
        sent a thousand routes must not keep them (see ``_push``)."""
        while not self.closed:
            self._wakeup.clear()
            sets = self.runtime.sets_for(self.subscriber)
            if sets is not None:
                for type_url in TYPE_ORDER:
                    await self._push(type_url, sets[type_url], write)
            await self._wakeup.wait()

    async def _push(self, type_url: str, current: ResourceSet,
                    write: Callable[[bytes], Awaitable[None]]) -> None:
        """One type's response, if any, written and forgotten when this returns (a local of
        the serving loop would hold the last one, half a megabyte a proxy, while it waits)."""
        response = self._response(type_url, current)
        if response is not None:
            await write(response)

    def status(self) -> dict[str, Any]:
        """What ``/debug/proxies`` and ``inspect`` show for this proxy. A type is current when
        the proxy ACKed the last response and nothing it subscribes to changed since: a named
        type's set (routes, endpoints) moves on with other proxies' names too, which this
        proxy is never sent, so its version alone is not the test. ``ackedAt`` is when the
        last ACK of the type was read (``time.time()``; None before the first), what
        ``scripts/bench_xds_envoys.py`` times real Envoys by."""
        latest = self.runtime.sets_for(self.subscriber) or {}
        sub = self.subscriber
        return {
            "node": self.node_id,
            "namespace": self.identity.namespace,
            "pod": self.identity.pod_name,
            "serviceAccount": self.identity.service_account,
            "identity": self.identity.spiffe_id(self.runtime.trust_domain),
            "certificate": {"expires": sub.expires_at, "renews": sub.renew_at}
            if sub.expires_at else {"problem": sub.identity_problem},
            "mtls": sub.view.key.security.mode if sub.view is not None else None,
            "connectedAt": self.connected_at,
            "problem": self.subscriber.problem,
            "types": {
                short_type(t): {
                    "sent": s.version, "acked": s.acked, "ackedAt": s.acked_at or None,
                    "latest": latest[t].version if t in latest else "",
                    "current": t in latest and s.acked == s.version and (
                        s.acked == latest[t].version
                        or (s.sent_set is latest[t] and not s.pending)),
                    "nack": {"version": s.nack[0], "message": s.nack[1]} if s.nack else None,
                    "pushes": s.pushes,
                }
                for t, s in self.types.items()
            },
        }


# A thousand proxies subscribe to the same thousand names: keep one frozenset of one set of
# strings for all of them, not a thousand copies.
_SUBSCRIPTIONS: dict[tuple[str, ...], tuple[tuple[str, ...], frozenset[str]]] = {}


def _subscription(listed: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    """The shared (names as listed, names) for a request's list."""
    found = _SUBSCRIPTIONS.get(listed)
    if found is None:
        if len(_SUBSCRIPTIONS) > 4096:
            _SUBSCRIPTIONS.clear()
        found = _SUBSCRIPTIONS[listed] = (listed, frozenset(listed))
    return found


def bearer(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):].strip()
    return ""


def node_claims(node: Any) -> tuple[str, str]:
    """(namespace, pod) the proxy says it is, from its node metadata."""
    fields = node.metadata.fields
    return (fields["namespace"].string_value if "namespace" in fields else "",
            fields["pod"].string_value if "pod" in fields else "")


SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


class AdsServer:
    """The ADS service. Its responses are bytes (``convert.response``), so it is registered
    with :meth:`handler`, which leaves them unserialized, not with the generated helper."""
    def __init__(self, *, runtime: Runtime, authenticator: Authenticator,
                 metrics: ControlPlaneMetrics, converter: Converter | None = None) -> None:
        self.runtime = runtime
        self.authenticator = authenticator
        self.metrics = metrics
        self.converter = converter or Converter()
        self.streams: set[Stream] = set()
        self.written = 0  # responses written, on every stream

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """One proxy's stream. Responses go out by ``context.write``, not by yielding them: gRPC
        keeps a generator's last item referenced until the next, which with a thousand idle
        streams is a thousand copies of their last (largest) response."""
        try:
            identity = await self.authenticator.authenticate(
                bearer(context.invocation_metadata()))
        except AuthError as err:
            self.metrics.refused.labels("unauthenticated").inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        claimed = node_claims(first.node)
        if claimed != (identity.namespace, identity.pod_name):
            self.metrics.refused.labels("wrong-node").inc()
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the token is for pod {identity.namespace}/{identity.pod_name}, the node "
                f"claims {claimed[0]}/{claimed[1]}")
        stream = Stream(identity=identity, node_id=first.node.id, runtime=self.runtime,
                        converter=self.converter, metrics=self.metrics)
        self.streams.add(stream)
        self.runtime.attach(stream.subscriber)
        self.metrics.connected.inc()
        stream.handle(first)
        del first
        reader = asyncio.create_task(self._read(request_iterator, stream))

        async def write(response: bytes) -> None:
            await context.write(response)
            self.written += 1

        try:
            await stream.serve(write)
        finally:
            reader.cancel()
            self.streams.discard(stream)
            self.runtime.detach(stream.subscriber)
            self.metrics.connected.dec()

    def close_all(self) -> None:
        """End every stream cleanly (status OK): each proxy reconnects at once, to whichever
        replica its control plane address leads to, and keeps its config meanwhile."""
        for stream in list(self.streams):
            stream.closed = True
            stream.wake()

    def handler(self) -> grpc.GenericRpcHandler:
        """The service for ``server.add_generic_rpc_handlers``: requests parsed, responses
        sent as the bytes the streams made."""
        method: grpc.RpcMethodHandler[Any, Any] = grpc.stream_stream_rpc_method_handler(
            self.StreamAggregatedResources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=None)
        return grpc.method_handlers_generic_handler(
            SERVICE, {"StreamAggregatedResources": method, "DeltaAggregatedResources":
                      grpc.stream_stream_rpc_method_handler(self._no_delta)})

    async def _no_delta(self, requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "this control plane serves state-of-the-world ADS")

    async def _read(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
                    stream: Stream) -> None:
        try:
            async for request in requests:
                stream.handle(request)
                del request  # a request names every resource: not kept while waiting
        finally:
            stream.closed = True
            stream.wake()
