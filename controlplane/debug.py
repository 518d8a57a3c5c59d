"""The control plane's HTTP side: probes, metrics, and what each proxy was sent and ACKed.

- ``/healthz``: the process runs; ``/readyz``: the registry delivered a full state (before that
  a proxy would get an empty mesh), so a rollout waits for it;
- ``/metrics``: Prometheus;
- ``/debug/proxies``: every proxy connected to this replica, per resource type the version
  sent, the version ACKed, whether that is the latest, and any NACK with Envoy's message;
- ``/debug/endpoints``: every Service's ready addresses, as this replica applied them;
- ``/debug/config?namespace=NS&pod=POD``: the listeners, clusters, routes and endpoints that
  pod's proxy is given, as JSON (``meshinject proxy-config`` prints it); never its secrets.

GET only, one request per connection: a debugging port, not a web server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import orjson

from controlplane.grpc.ads import AdsServer, short_type
from controlplane.metrics import ControlPlaneMetrics
from controlplane.runtime import Runtime

log = logging.getLogger("meshinject.debug")
Reply = tuple[int, str, bytes]


class DebugServer:
    def __init__(self, *, runtime: Runtime, ads: AdsServer, metrics: ControlPlaneMetrics):
        self.runtime = runtime
        self.ads = ads
        self.metrics = metrics
        self.routes: dict[str, Callable[[dict[str, list[str]]], Reply]] = {
            "/healthz": lambda q: (200, "text/plain", b"ok"),
            "/readyz": self._ready,
            "/metrics": lambda q: (200, "text/plain; version=0.0.4", self.metrics.render()),
            "/debug/proxies": self._proxies,
            "/debug/endpoints": self._endpoints,
            "/debug/config": self._config,
        }

    def _ready(self, query: dict[str, list[str]]) -> Reply:
        if self.runtime.synced.is_set():
            return 200, "text/plain", b"ok"
        return 503, "text/plain", b"waiting for the registry's first full state"

    def _proxies(self, query: dict[str, list[str]]) -> Reply:
        streams = sorted((s.status() for s in self.ads.streams),
                         key=lambda s: (s["namespace"], s["pod"]))
        return 200, "application/json", orjson.dumps(streams)

    def _endpoints(self, query: dict[str, list[str]]) -> Reply:
        """The ready addresses of every Service, as the runtime has applied them."""
        ready = {f"{ns}/{name}": sorted(e.address for e in endpoints
                                        if e.ready and not e.terminating)
                 for (ns, name), endpoints in self.runtime.state.endpoints.items()}
        return 200, "application/json", orjson.dumps(ready)

    def _config(self, query: dict[str, list[str]]) -> Reply:
        namespace, pod = query.get("namespace", [""])[0], query.get("pod", [""])[0]
        sets = self.runtime.preview((namespace, pod))
        if isinstance(sets, str):
            return 404, "application/json", orjson.dumps({"error": sets or "unknown pod"})
        out = {short_type(t): {n: r.body for n, r in sorted(s.items.items())}
               for t, s in sets.items()}
        return 200, "application/json", orjson.dumps(out)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            url = urlsplit(target)
            route = self.routes.get(url.path)
            if method != "GET":
                status, kind, body = 405, "text/plain", b"GET only"
            elif route is None:
                status, kind, body = 404, "text/plain", b"not found"
            else:
                status, kind, body = route(parse_qs(url.query))
            writer.write(f"HTTP/1.1 {status} x\r\nContent-Type: {kind}\r\nContent-Length: "
                         f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError) as err:
            log.debug("debug request dropped: %s", err)
        finally:
            writer.close()

    async def start(self, *, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._handle, host, port)
