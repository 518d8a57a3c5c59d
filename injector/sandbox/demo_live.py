"""The demo's measurements of the running mesh (the shell around :mod:`demo_mesh`).

- the wire: a packet capture on the node's bridge while the traffic runs, reported with the
  apps' logs and the replicas' counters (:func:`mesh_report`: balancing, mutual TLS);
- the control plane's ``/debug/proxies`` (what each proxy ACKed), each Envoy's own
  ``/config_dump`` (what it runs) and pid (whether it restarted), around an edit of the mesh
  ConfigMap applied to the running sandbox;
- the policy step, :func:`policy_denies_one_caller`: it applies an AccessPolicy and says
  anything only if the control plane acted on it (the protected pods' proxies, and only
  theirs, ACKed a new Listener); a control plane without AccessPolicy support ignores the
  object, and the demo then prints nothing about policies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from injector.sandbox import apiserver, demo_manifest, demo_mesh, network, nssocket
from injector.sandbox.demo_mesh import ProxyView, WireFlow
from injector.sandbox.demo_observe import Seen
from injector.sandbox.model import BRIDGE, NODE_ADDRESS, PodPlan, SandboxPlan
from injector.sandbox.state import StateDir
from injector.sandbox.wire import Capture, Flow
from mesh.contract import (
    ACCESS_POLICY_GROUP,
    ACCESS_POLICY_KIND,
    ACCESS_POLICY_VERSION,
    ADMIN_PORT,
    CONTROLPLANE_DEBUG_PORT,
    PROXY_NAME,
)
from mesh.errors import SandboxError

APP_PORT = 8080  # the demo apps' containerPort
ACK_TIMEOUT = 10.0
POLICY_WAIT = 3.0  # how long a control plane may take to act on an AccessPolicy


def capture(owner: int, pods: list[PodPlan]) -> Capture:
    """Start counting what crosses the node's bridge between ``pods`` and the node."""
    addresses = frozenset({NODE_ADDRESS, *(p.address for p in pods)})
    cap = Capture(namespace=network.node_name(owner), interface=BRIDGE, addresses=addresses,
                  port=APP_PORT, node=NODE_ADDRESS)
    cap.start()
    return cap


def wire_flows(flows: Mapping[tuple[str, str], Flow], *, caller: PodPlan, server: PodPlan,
               ) -> tuple[list[WireFlow], list[WireFlow]]:
    """The caller <-> server flows, and the node -> caller one (plaintext from outside)."""
    def get(src: str, dst: str) -> Flow:
        return flows.get((src, dst)) or Flow()
    mesh = [WireFlow(f"{caller.name} -> {server.name}:{APP_PORT}",
                     get(caller.address, server.address)),
            WireFlow(f"{server.name}:{APP_PORT} -> {caller.name}",
                     get(server.address, caller.address))]
    outside = [WireFlow(f"node -> {caller.name}:{APP_PORT}", get(NODE_ADDRESS, caller.address))]
    return mesh, outside


def mesh_report(plan: SandboxPlan, seen: list[Seen], flows: Mapping[tuple[str, str], Flow],
                ) -> list[str]:
    """Balancing and mutual TLS, from the frontend's and backends' logs, the replicas'
    counters and the packets seen on the wire."""
    by_name = {s.pod: s for s in seen}
    caller = next(p for p in plan.pods if p.name.startswith(demo_manifest.ENTRY))
    backends = demo_manifest.BALANCED
    behind = demo_mesh.replicas(plan, backends)
    app = by_name[caller.name].app
    lines = demo_mesh.balance_lines(demo_mesh.Balance(
        caller=caller.name, service=backends, calls=app.calls[backends],
        connections=app.connections[backends],
        answered=demo_mesh.answered(app.answered_by, backends),
        counted_in={p.name: sum(by_name[p.name].proxy.requests_in.values()) for p in behind}))
    mesh, outside = wire_flows(flows, caller=caller, server=behind[0])
    servers = [p for p in plan.pods if p.injected and p is not caller]
    lines += demo_mesh.tls_lines(caller=caller, servers=servers,
                                 certs={p.name: by_name[p.name].app.client_certs for p in servers},
                                 mesh=mesh, outside=outside)
    return lines


def proxies(owner: int) -> dict[tuple[str, str], dict[str, Any]]:
    """The control plane's ``/debug/proxies``, by (namespace, pod)."""
    try:
        code, body = nssocket.http_get(network.node_name(owner), CONTROLPLANE_DEBUG_PORT,
                                       "/debug/proxies", host=NODE_ADDRESS, timeout=2)
        found = json.loads(body) if code == 200 else []
    except (OSError, ValueError) as err:
        raise SandboxError(f"the control plane's /debug/proxies does not answer: {err}") from err
    return {(p["namespace"], p["pod"]): p for p in found}


def route_timeout(namespace: str, route: str) -> str | None:
    """The timeout the Envoy in ``namespace`` runs on the route configuration ``route``."""
    try:
        code, body = nssocket.http_get(namespace, ADMIN_PORT,
                                       "/config_dump?resource=dynamic_route_configs", timeout=2)
        configs = json.loads(body).get("configs", []) if code == 200 else []
    except (OSError, ValueError):
        return None
    for config in configs:
        rc = config.get("route_config") or {}
        if rc.get("name") == route:
            for host in rc.get("virtual_hosts", []):
                for r in host.get("routes", []):
                    if "route" in r:
                        return str(r["route"].get("timeout", "0s"))
    return None


def views(state: StateDir, plan: SandboxPlan, *, owner: int, route: str) -> dict[str, ProxyView]:
    """Every injected pod's proxy as the control plane, its Envoy and the supervisor see it."""
    connected = proxies(owner)
    pods = state.status().get("pods") or {}
    out = {}
    for pod in plan.pods:
        if not pod.injected:
            continue
        status = connected.get((pod.namespace, pod.name)) or {"types": {}}
        types = status["types"]
        proxy = ((pods.get(pod.key) or {}).get("containers") or {}).get(PROXY_NAME) or {}
        out[pod.name] = ProxyView(
            acked={t: str(v.get("acked") or "") for t, v in types.items()},
            current=bool(types) and all(v.get("current") for v in types.values()),
            pid=proxy.get("pid"), restarts=int(proxy.get("restarts") or 0),
            timeout=route_timeout(pod.netns(owner), route))
    return out


def live_change(state: StateDir, plan: SandboxPlan, *, owner: int, field: str, value: str,
                route: str) -> list[str]:
    """Edit ``traffic.<field>`` in the mesh ConfigMap of the running sandbox and report what
    the proxies ACKed and run, and whether their Envoys restarted."""
    before = views(state, plan, owner=owner, route=route)
    config = json.loads(json.dumps(plan.mesh_config))
    traffic = config.setdefault("traffic", {})
    old = str(traffic.get(field, "-"))
    traffic[field] = value
    began = time.monotonic()
    apiserver.apply(state, apiserver.mesh_configmap(config))
    after = before
    while time.monotonic() - began < ACK_TIMEOUT:
        time.sleep(0.1)
        after = views(state, plan, owner=owner, route=route)
        if all(v.current and v.acked != before[p].acked and v.timeout == value
               for p, v in after.items()):
            break
    return demo_mesh.change_lines(field=f"traffic.{field}", old=old, new=value,
                                  took=time.monotonic() - began, before=before, after=after,
                                  route=route)


def _listeners(owner: int, pods: list[PodPlan]) -> dict[str, str]:
    connected = proxies(owner)
    return {p.name: str(((connected.get((p.namespace, p.name)) or {}).get("types") or {})
                        .get("Listener", {}).get("acked") or "") for p in pods}


def _call(namespace: str, *, vip: str, host: str) -> int:
    """A GET from inside a pod's namespace (so through its proxy, as its app would call)."""
    try:
        return nssocket.http_get(namespace, 80, "/", host=vip, header_host=host, timeout=5)[0]
    except OSError:
        return 599


def policy_denies_one_caller(state: StateDir, plan: SandboxPlan, *, owner: int, target: str,
                             allowed: PodPlan, denied: PodPlan) -> list[str]:
    """Protect ``target``'s pods with an AccessPolicy allowing only ``allowed``'s service
    account, then call the target from both pods' namespaces. Empty (nothing to say) when the
    control plane did not act on the policy within POLICY_WAIT."""
    protected = demo_mesh.replicas(plan, target)
    service = next(s for s in plan.services if s.name == target)
    others = [p for p in plan.pods if p.injected and p not in protected]
    name = f"{target}-callers"
    before = _listeners(owner, plan.pods)
    apiserver.apply(state, {
        "apiVersion": f"{ACCESS_POLICY_GROUP}/{ACCESS_POLICY_VERSION}",
        "kind": ACCESS_POLICY_KIND,
        "metadata": {"name": name, "namespace": service.namespace},
        "spec": {"selector": {"matchLabels": dict(protected[0].labels)},
                 "allow": [{"from": {"serviceAccounts": [
                     f"{allowed.namespace}/{allowed.service_account}"]}}]},
    })
    deadline = time.monotonic() + POLICY_WAIT
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = _listeners(owner, plan.pods)
        acted = all(now[p.name] and now[p.name] != before[p.name] for p in protected)
        if acted and all(now[p.name] == before[p.name] for p in others):
            break
    else:
        return []  # the control plane ignored it: no AccessPolicy support, nothing to show
    host = f"{service.name}.{service.namespace}"
    calls = {p.name: _call(p.netns(owner), vip=str(service.vip), host=host)
             for p in (allowed, denied)}
    return demo_mesh.policy_lines(
        name=f"{service.namespace}/{name}", target=host,
        allowed=f"{allowed.namespace}/{allowed.service_account}", calls=calls)
