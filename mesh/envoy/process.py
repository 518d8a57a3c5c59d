"""How Envoy runs as the mesh-proxy: its command-line flags and the preStop drain hook.

The bootstrap says what Envoy serves; these say how the process lives and dies inside the pod:
the drain window on the way out, and how often access logs reach stdout.
"""

from __future__ import annotations

from mesh.contract import ADMIN_PORT
from mesh.overrides.traffic import TrafficPolicy


def proxy_args(policy: TrafficPolicy) -> list[str]:
    """Envoy flags the policy needs: the drain window the preStop hook starts (closing idle
    keep-alive connections at once, so peers reconnect elsewhere), and access logs flushed each
    second rather than Envoy's default ten."""
    return ["--drain-time-s", str(policy.drain_seconds), "--drain-strategy", "immediate",
            "--file-flush-interval-msec", "1000"]


def prestop_command(policy: TrafficPolicy, *, admin_port: int = ADMIN_PORT) -> list[str]:
    """The mesh-proxy's preStop: start Envoy's graceful drain of the inbound listener, then hold
    termination for the drain time.

    Envoy exits at once on SIGTERM, so the kubelet's SIGTERM must come only after in-flight
    requests finished and peers stopped sending here. During the drain the listener still
    accepts (endpoint removal takes a moment to reach every node) but answers each request with
    ``Connection: close``, so pooled connections move to other endpoints; the app's own outbound
    calls keep working. The admin API wants a POST (HTTP/1.1: it answers 1.0 with 426), and the
    envoyproxy/envoy image (Ubuntu) has bash but no curl: bash's /dev/tcp sends it."""
    request = ("POST /drain_listeners?graceful&inboundonly HTTP/1.1\\r\\nHost: admin\\r\\n"
               "Content-Length: 0\\r\\nConnection: close\\r\\n\\r\\n")
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{admin_port} && printf '{request}' >&3 && cat <&3 >/dev/null"
        f"; sleep {policy.drain_seconds}"
    )
    return ["/bin/bash", "-c", script]

