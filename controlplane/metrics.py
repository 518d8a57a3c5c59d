"""The control plane's Prometheus metrics, in a registry of its own (as the webhook's).

Label values are resource type names and fixed reasons, never anything a proxy sends, so the
series count stays bounded whatever connects.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ControlPlaneMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connected = Gauge("meshinject_xds_connected_proxies", "Proxies with an open ADS "
                               "stream to this replica", registry=self.registry)
        self.pushes = Counter("meshinject_xds_pushes", "Responses sent, by resource type",
                              ["type"], registry=self.registry)
        self.nacks = Counter("meshinject_xds_nacks", "Responses a proxy rejected (NACK), by "
                             "resource type; the proxy keeps its last good config",
                             ["type"], registry=self.registry)
        self.refused = Counter("meshinject_xds_refused_streams", "Streams closed before any "
                               "config, by reason (unauthenticated, wrong-node)", ["reason"],
                               registry=self.registry)
        self.conversion_errors = Counter("meshinject_xds_conversion_errors", "Resources that "
                                         "did not fit their protobuf type and were not pushed",
                                         registry=self.registry)
        self.ack_latency = Histogram("meshinject_xds_change_to_ack_seconds", "From a change "
                                     "reaching the control plane to a proxy ACKing the config "
                                     "that carries it", buckets=_LATENCY, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
