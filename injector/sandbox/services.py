"""Services in the sandbox: a name in every pod's hosts file, a virtual address on the node.

A hosts file gives a name one address, so a Service gets one virtual address (from
198.19.0.0/16) and the node namespace does what kube-proxy does: DNAT from ``vip:port`` to one of
the endpoints' ``address:targetPort``, picked at random per connection (``-m statistic``), so a
Service with several pods spreads its connections and its port mapping holds. Pods have /32
addresses and reach each other through the node, so replies pass the same conntrack and are
translated back. A headless Service (``clusterIP: None``) has no virtual address: its name
resolves to its first pod. ``ip netns exec`` bind-mounts ``/etc/netns/<ns>/hosts`` over
``/etc/hosts``, which is how every container in a pod sees these names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from injector.sandbox.model import NODE_ADDRESS, PodPlan, SandboxPlan, ServicePlan

CHAIN = "MESHINJECT-SERVICES"


def _address(service: ServicePlan) -> str | None:
    return service.vip or (service.endpoints[0] if service.endpoints else None)


def hosts_file(plan: SandboxPlan, *, pod: PodPlan | None) -> str:
    """``/etc/hosts`` for one pod (short names for its own namespace), or the node (``None``)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if pod is not None:
        lines.append(f"{pod.address}\t{pod.name}")
    for service in plan.services:
        address = _address(service)
        if address is not None:
            names = service.names(from_namespace=None if pod is None else pod.namespace)
            lines.append(f"{address}\t{' '.join(names)}")
    if plan.control_plane_host:  # the control plane runs on the node, as a host service
        lines.append(f"{NODE_ADDRESS}\t{plan.control_plane_host}")
    return "\n".join(lines) + "\n"


def resolv_conf(pod: PodPlan | None) -> str:
    """No DNS server in the sandbox: point the resolver at the pod's own (closed) port 53, so a
    lookup the hosts file cannot answer fails at once instead of timing out against the host's
    servers, which the pod cannot reach (Python's http.server resolves its own name at start:
    five seconds per app otherwise). The search list is a cluster's, for the record."""
    search = f"{pod.namespace}.svc.cluster.local svc.cluster.local cluster.local" if pod else ""
    lines = [f"search {search}"] if search else []
    lines += ["nameserver 127.0.0.1", "options ndots:1 timeout:1 attempts:1"]
    return "\n".join(lines) + "\n"


def nat_rules(plan: SandboxPlan) -> str:
    """iptables-restore input for the node namespace: each Service port DNATed to its pods.

    Endpoint ``k`` of ``n`` is chosen with probability ``1/(n-k)`` among those left, which is
    uniform overall; the last one takes what remains. A port with no endpoints is refused.
    """
    nat = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
        f":{CHAIN} - [0:0]",
        f"-A PREROUTING -j {CHAIN}",
        f"-A OUTPUT -j {CHAIN}",
    ]
    refuse = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
    ]
    for service in plan.services:
        if service.vip is None:
            continue
        for port in service.ports:
            match = f"-d {service.vip}/32 -p tcp -m tcp --dport {port.port}"
            tag = f'-m comment --comment "{service.namespace}/{service.name}:{port.port}"'
            if not service.endpoints:
                for chain in ("FORWARD", "OUTPUT"):
                    refuse.append(f"-A {chain} {match} {tag} -j REJECT --reject-with tcp-reset")
                continue
            count = len(service.endpoints)
            for k, endpoint in enumerate(service.endpoints):
                pick = ""
                if k < count - 1:
                    pick = f"-m statistic --mode random --probability {1 / (count - k):.5f} "
                nat.append(
                    f"-A {CHAIN} {match} {tag} {pick}"
                    f"-j DNAT --to-destination {endpoint}:{port.target_port}"
                )
    return "\n".join([*nat, "COMMIT", *refuse, "COMMIT"]) + "\n"


# -- the sandbox node: the cluster's Services ---------------------------------------------
def cluster_hosts(services: Iterable[Mapping[str, Any]], *, namespace: str, pod_ip: str,
                  hostname: str) -> str:
    """``/etc/hosts`` for a pod on the sandbox node: what a cluster's DNS would answer for each
    Service with a ClusterIP (``name`` in its own namespace, ``name.ns``, ``name.ns.svc``,
    ``name.ns.svc.cluster.local``), and the pod's own name, as a kubelet writes it. Headless
    and ExternalName Services have no ClusterIP and are not listed."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{pod_ip}\t{hostname}"]
    for service in sorted(services, key=lambda s: (s["metadata"].get("namespace", ""),
                                                   s["metadata"]["name"])):
        ip = (service.get("spec") or {}).get("clusterIP")
        if not ip or ip == "None":
            continue
        name, ns = service["metadata"]["name"], service["metadata"].get("namespace", "")
        full = [f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
        lines.append(f"{ip}\t{' '.join(([name] if ns == namespace else []) + full)}")
    return "\n".join(lines) + "\n"
