"""The real kube-proxy (built from ``k8s.io/kubernetes/cmd/kube-proxy``) in the node namespace.

It programs the node namespace's iptables from the cluster's Services and EndpointSlices, as
on any node, so a ClusterIP routes for traffic the mesh does not capture (an unmeshed pod, the
control plane's own calls to ``kubernetes.default``, a proxy's connection to the control
plane). Started inside the node namespace, it sees only that namespace's netfilter and
``/proc/sys/net``; the flags keep it off everything the root namespace shares: it leaves the
conntrack table size and timeouts alone (``/sys/module/nf_conntrack`` is the machine's), does
not set its OOM score, and does not turn on ``route_localnet`` for localhost NodePorts. It talks
to the API server through the node's relay (``127.0.0.1:RELAY_PORT`` in the node namespace), as
``system:kube-proxy`` (bound to ``system:node-proxier`` by the API server's bootstrap RBAC).
The node agent restarts it if it exits, as a kubelet would a static pod.
"""

from __future__ import annotations

from pathlib import Path

from injector.sandbox import netns, nssocket
from injector.sandbox.restarting import RestartingProcess

HEALTHZ_PORT = 10256


class KubeProxy(RestartingProcess):
    def __init__(self, *, node: netns.Netns, binary: str, kubeconfig: Path, node_name: str,
                 node_ip: str, cluster_cidr: str, log: Path) -> None:
        super().__init__(node=node, log=log)
        self.binary, self.kubeconfig = binary, kubeconfig
        self.node_name, self.node_ip, self.cluster_cidr = node_name, node_ip, cluster_cidr

    def argv(self) -> list[str]:
        return [
            self.binary, f"--kubeconfig={self.kubeconfig}", "--proxy-mode=iptables",
            f"--hostname-override={self.node_name}", f"--bind-address={self.node_ip}",
            f"--nodeport-addresses={self.node_ip}/32",
            "--detect-local-mode=ClusterCIDR", f"--cluster-cidr={self.cluster_cidr}",
            "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0", "--oom-score-adj=0",
            "--iptables-localhost-nodeports=false",
            f"--healthz-bind-address=127.0.0.1:{HEALTHZ_PORT}",
            "--metrics-bind-address=127.0.0.1:10249", "--v=1",
        ]

    def healthy(self) -> bool:
        """Its /healthz: 200 once it has synced the rules at least once and keeps syncing."""
        try:
            code, _ = nssocket.http_get(self.node.name, HEALTHZ_PORT, "/healthz", timeout=1)
        except OSError:
            return False
        return code == 200
